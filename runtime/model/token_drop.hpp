#pragma once
// random-LTD (random layerwise token dropping, arXiv 2211.11586) as the model's train mode sees
// it: in the listed layers each sequence keeps `keep` of its t tokens; the layer runs on those
// rows only (causal among them, RoPE at their original positions) and the dropped rows bypass it
// unchanged. This file holds the request (token_drop), its validation, the random draw of the kept
// positions and the row gather / scatter the model does around a dropping layer. The schedule
// (how many tokens, which layers, by step) lives in runtime/train/curriculum.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace zf {

// One forward_backward's token dropping; stateless per call (the model keeps nothing of it).
struct token_drop {
  std::vector<int> layers;  // layer ids that drop, strictly ascending, each in 0..n_layer-1
  int keep = 0;             // tokens each sequence keeps in those layers, 1..t
  uint64_t seed = 0;        // kept positions drawn from (seed, layer, batch row)
  // Optional explicit kept positions: [layers.size()][b][keep], each row strictly increasing in
  // 0..t-1 (tests and golden files); empty = drawn from seed by draw_kept_positions.
  std::vector<int> kept;
};

// The kept positions of batch row `row` in layer `layer`: `keep` distinct positions of 0..t-1,
// ascending, every subset of that size equally likely. Deterministic: std::mt19937_64 seeded
// through std::seed_seq{seed lo 32 bits, seed hi 32 bits, layer, row} (both fully specified by
// the standard), then selection sampling (Knuth's Algorithm S): position i (0..t-1 in order) is
// kept when rng() % (t - i) < the number still to keep. The raw 64-bit outputs are used, not a
// std distribution (whose algorithm differs across standard libraries), so the draw is the same
// everywhere; the modulo's bias is below t / 2^64. keep == t keeps every position. Callers that
// drop in several micro-batches or steps fold those into seed. out: [keep].
void draw_kept_positions(uint64_t seed, int layer, int row, int t, int keep, int* out);

// zf::error naming train.random_ltd.layers / train.random_ltd.keep when d does not fit a model of
// n_layer layers and a [b, t] batch: a layer id out of range or not ascending, keep outside 1..t,
// explicit kept positions of the wrong count, out of range or not strictly increasing.
// An empty layers list drops nothing and is always valid.
void validate_token_drop(const token_drop& d, int n_layer, int b, int t);

// The kept positions of every dropping layer for a [b, t] batch: out [layers.size()][b][keep],
// d.kept when given, else drawn (draw_kept_positions with each layer's id and row). d must be
// valid (validate_token_drop). out is resized (no reallocation when its capacity suffices).
void kept_positions(const token_drop& d, int b, int t, std::vector<int>& out);

// Row moves around a dropping layer, for rows of c floats; kept: [b][k] ascending positions.
// gather_rows:  out [b*k, c] = x [b*t, c] at the kept rows (out must not overlap x).
void gather_rows(const float* x, const int* kept, int b, int t, int k, std::size_t c, float* out);
// scatter_rows: x [b*t, c] at the kept rows = compact [b*k, c]; other rows untouched.
void scatter_rows(const float* compact, const int* kept, int b, int t, int k, std::size_t c,
                  float* x);
// expand_rows: buf holds compact [b*k, c] rows at its front; afterwards buf [b*t, c] holds them at
// their kept rows and x's rows elsewhere (a dropping layer's output, in place: no scratch).
void expand_rows(float* buf, const float* x, const int* kept, int b, int t, int k, std::size_t c);

}  // namespace zf
