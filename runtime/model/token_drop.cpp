// random-LTD's validation, draw and row moves (token_drop.hpp).
#include "runtime/model/token_drop.hpp"

#include <algorithm>
#include <cstring>
#include <random>

#include "runtime/core/error.hpp"

namespace zf {

void draw_kept_positions(uint64_t seed, int layer, int row, int t, int keep, int* out) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(layer), static_cast<uint32_t>(row)};
  std::mt19937_64 rng(seq);
  int need = keep;
  for (int i = 0; i < t && need > 0; ++i) {
    const uint64_t left = static_cast<uint64_t>(t - i);
    if (rng() % left < static_cast<uint64_t>(need)) {
      *out++ = i;
      --need;
    }
  }
}

void validate_token_drop(const token_drop& d, int n_layer, int b, int t) {
  if (d.layers.empty()) return;
  for (std::size_t i = 0; i < d.layers.size(); ++i) {
    const int l = d.layers[i];
    if (l < 0 || l >= n_layer)
      fail("train.random_ltd.layers: layer {} out of range 0..{} (the model has {} layers)", l,
           n_layer - 1, n_layer);
    if (i > 0 && l <= d.layers[i - 1])
      fail("train.random_ltd.layers must be strictly ascending: {} follows {}", l, d.layers[i - 1]);
  }
  if (d.keep < 1 || d.keep > t)
    fail("train.random_ltd.keep: {} kept tokens is outside 1..{} (the sequence length)", d.keep, t);
  if (d.kept.empty()) return;
  const std::size_t want = d.layers.size() * std::size_t(b) * std::size_t(d.keep);
  if (d.kept.size() != want)
    fail(
        "train.random_ltd.keep: {} explicit kept positions, want {} (layers {} x batch {} x "
        "keep {})",
        d.kept.size(), want, d.layers.size(), b, d.keep);
  for (std::size_t li = 0; li < d.layers.size(); ++li)
    for (int r = 0; r < b; ++r) {
      const int* row = d.kept.data() + (li * b + r) * std::size_t(d.keep);
      for (int j = 0; j < d.keep; ++j) {
        if (row[j] < 0 || row[j] >= t)
          fail(
              "train.random_ltd.keep: explicit kept position {} (layer {}, row {}) is out of "
              "range 0..{}",
              row[j], d.layers[li], r, t - 1);
        if (j > 0 && row[j] <= row[j - 1])
          fail(
              "train.random_ltd.keep: explicit kept positions of layer {}, row {} are not "
              "strictly increasing ({} after {})",
              d.layers[li], r, row[j], row[j - 1]);
      }
    }
}

void kept_positions(const token_drop& d, int b, int t, std::vector<int>& out) {
  const std::size_t per_layer = std::size_t(b) * d.keep;
  out.resize(d.layers.size() * per_layer);
  if (!d.kept.empty()) {
    std::copy(d.kept.begin(), d.kept.end(), out.begin());
    return;
  }
  for (std::size_t li = 0; li < d.layers.size(); ++li)
    for (int r = 0; r < b; ++r)
      draw_kept_positions(d.seed, d.layers[li], r, t, d.keep,
                          out.data() + li * per_layer + std::size_t(r) * d.keep);
}

void gather_rows(const float* x, const int* kept, int b, int t, int k, std::size_t c, float* out) {
  for (int bi = 0; bi < b; ++bi)
    for (int j = 0; j < k; ++j) {
      const std::size_t dst = std::size_t(bi) * k + j, src = std::size_t(bi) * t + kept[dst];
      std::memcpy(out + dst * c, x + src * c, c * sizeof(float));
    }
}

void scatter_rows(const float* compact, const int* kept, int b, int t, int k, std::size_t c,
                  float* x) {
  for (int bi = 0; bi < b; ++bi)
    for (int j = 0; j < k; ++j) {
      const std::size_t src = std::size_t(bi) * k + j, dst = std::size_t(bi) * t + kept[src];
      std::memcpy(x + dst * c, compact + src * c, c * sizeof(float));
    }
}

void expand_rows(float* buf, const float* x, const int* kept, int b, int t, int k, std::size_t c) {
  // Compact row i goes to row d(i) = bi*t + kept[i] >= i, d increasing in i: moving from the last
  // row down never overwrites a compact row still to move.
  for (std::size_t i = std::size_t(b) * k; i-- > 0;) {
    const std::size_t dst = (i / k) * t + kept[i];
    if (dst != i) std::memmove(buf + dst * c, buf + i * c, c * sizeof(float));
  }
  for (int bi = 0; bi < b; ++bi) {  // the dropped rows: the layer's input, unchanged
    const int* kr = kept + std::size_t(bi) * k;
    int j = 0;
    for (int p = 0; p < t; ++p) {
      if (j < k && kr[j] == p) {
        ++j;
        continue;
      }
      const std::size_t r = std::size_t(bi) * t + p;
      std::memcpy(buf + r * c, x + r * c, c * sizeof(float));
    }
  }
}

}  // namespace zf
