#include "runtime/train/zero_partition.hpp"

#include <algorithm>

#include "runtime/core/error.hpp"

namespace zf {

namespace {

std::size_t chunk_of(std::size_t size, int holders) {
  const std::size_t c = (size + std::size_t(holders) - 1) / std::size_t(holders);
  return (c + 15) / 16 * 16;  // keep every chunk 64-byte aligned inside the owned buffers
}

}  // namespace

zero_partition::zero_partition(const std::vector<region>& rs, int w)
    : world(w), slots(1), regions(rs) {
  if (w < 1) fail("ZeRO: world size must be at least 1, got {}", w);
  for (std::size_t i = 0; i < regions.size(); ++i) {
    first.push_back(pieces.size());
    const std::size_t c = chunk_of(regions[i].size(), w);
    pieces.push_back({regions[i], i, -1, c, owned_size});
    owned_size += c;
  }
  first.push_back(pieces.size());
}

zero_partition::zero_partition(const param_layout& layout, int w, int s)
    : zero_partition(layout.regions, w) {
  if (s < 1 || w % s) fail("ZeRO: {} expert slots do not divide {} ranks", s, w);
  if (s == 1) return;
  slots = s;
  pieces.clear();
  first.clear();
  owned_size = 0;
  const int holders_per_slot = w / s;
  for (std::size_t i = 0; i < regions.size(); ++i) {
    first.push_back(pieces.size());
    const region& g = regions[i];
    const int l = int(i) - 1;  // regions 1..L are the blocks
    const auto ex =
        l >= 0 && l < int(regions.size()) - 2 ? layout.experts(l) : param_layout::expert_span{};
    if (ex.n == 0) {
      const std::size_t c = chunk_of(g.size(), w);
      pieces.push_back({g, i, -1, c, owned_size});
      owned_size += c;
      continue;
    }
    if (ex.n % s || ex.begin + std::size_t(ex.n) * ex.stride != g.end)
      fail("ZeRO: block {}'s {} experts do not split into {} slots ending its region", l, ex.n, s);
    const std::size_t cd = chunk_of(ex.begin - g.begin, w);
    pieces.push_back({{g.begin, ex.begin}, i, -1, cd, owned_size});
    owned_size += cd;
    const std::size_t per = std::size_t(ex.n / s) * ex.stride, ce = chunk_of(per, holders_per_slot);
    for (int d = 0; d < s; ++d) {
      const std::size_t b = ex.begin + std::size_t(d) * per;
      pieces.push_back({{b, b + per}, i, d, ce, owned_size});
    }
    owned_size += ce;
  }
  first.push_back(pieces.size());
}

region zero_partition::owned(int r, const zero_piece& p) const {
  if (!holds(r, p)) return {p.range.begin, p.range.begin};
  const std::size_t i = std::size_t(holder_index(r, p)), n = p.range.size();
  const std::size_t b = std::min(n, i * p.chunk), e = std::min(n, (i + 1) * p.chunk);
  return {p.range.begin + b, p.range.begin + e};
}

std::size_t zero_partition::max_bucket() const {
  std::size_t m = 0;
  for (const auto& p : pieces) m = std::max(m, padded(p));
  return m;
}

std::size_t zero_partition::max_chunk() const {
  std::size_t m = 0;
  for (const auto& p : pieces) m = std::max(m, p.chunk);
  return m;
}

std::size_t zero_partition::max_split_piece() const {
  std::size_t m = 0;
  for (const auto& p : pieces)
    if (first[p.reg + 1] - first[p.reg] > 1) m = std::max(m, padded(p));
  return m;
}

std::size_t zero_partition::max_block_bucket() const {
  std::size_t m = 0;
  for (std::size_t i = 1; i < regions.size(); ++i) m = std::max(m, region_bucket(i));
  return m;
}

std::size_t zero_partition::region_bucket(std::size_t i) const {
  std::size_t m = regions[i].size();
  for (std::size_t k = first[i]; k < first[i + 1]; ++k) m = std::max(m, padded(pieces[k]));
  return m;
}

std::vector<region> zero_partition::held(int r) const {
  std::vector<region> out;
  for (const auto& p : pieces) {
    if (!holds(r, p)) continue;
    if (!out.empty() && out.back().end == p.range.begin)
      out.back().end = p.range.end;
    else
      out.push_back(p.range);
  }
  return out;
}

std::size_t zero_partition::held_size(int r) const {
  std::size_t n = 0;
  for (const region& h : held(r)) n += h.size();
  return n;
}

}  // namespace zf
