#include "runtime/monitor/downsample.hpp"

#include <algorithm>

namespace zf::monitor {

std::vector<point> downsample_minmax(std::span<const point> pts, int buckets) {
  const std::size_t n = pts.size(), b = static_cast<std::size_t>(std::max(buckets, 1));
  if (n <= 2 * b + 2) return {pts.begin(), pts.end()};
  std::vector<point> out;
  out.reserve(2 * b + 2);
  std::size_t last = 0;  // index of the point appended last, to keep x order without repeats
  auto keep = [&](std::size_t i) {
    if (out.empty() || i > last) {
      out.push_back(pts[i]);
      last = i;
    }
  };
  keep(0);
  for (std::size_t k = 0; k < b; ++k) {
    const std::size_t lo = k * n / b, hi = (k + 1) * n / b;  // [lo, hi), never empty (n > b)
    std::size_t mn = lo, mx = lo;
    for (std::size_t i = lo + 1; i < hi; ++i) {
      if (pts[i].y < pts[mn].y) mn = i;
      if (pts[i].y > pts[mx].y) mx = i;
    }
    keep(std::min(mn, mx));
    keep(std::max(mn, mx));
  }
  keep(n - 1);
  return out;
}

}  // namespace zf::monitor
