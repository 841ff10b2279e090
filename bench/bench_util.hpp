#pragma once
// Small helpers the benches share: wall-clock milliseconds since a time point, and medians.
#include <algorithm>
#include <chrono>
#include <vector>

namespace zf::bench {

using clk = std::chrono::steady_clock;

inline double ms_since(clk::time_point t) {
  return std::chrono::duration<double, std::milli>(clk::now() - t).count();
}

// The median of v (the mean of the middle two for an even count); v non-empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace zf::bench
