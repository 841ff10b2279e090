#pragma once
// Quantized linear layers of the one model (issue 14): a block's four projections (qkv, o, up,
// down) and the LM head held in a kernels/quant.hpp format instead of fp32, optionally with
// LoRC's low-rank correction and int8 activations (W8A8). The block code (runtime/model/block)
// calls quant_linear::forward where a block's weights carry a block_quant; the paged mode
// (serving) and the score mode (`zeroflow score`) run them; training refuses them.
// A "bf16" linear (`serve --dtype bf16`, issue 16) is the same carrier with its weight as bf16
// rows in `bf16` instead of packed codes (kernels/bf16_linear.hpp; fmt, group and scales unused).
// Orientation: q has one row per output (n = out features, k = in features), the transpose of
// the Conv1D float matrices, so a decode row's outputs are dot products over contiguous rows.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/bf16_linear.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/quant.hpp"

namespace zf {

struct quant_linear {
  kernels::qformat fmt = kernels::qformat::int8;
  int k = 0, n = 0, group = 0;
  bool asym = false;
  bool act_int8 = false;            // W8A8: activations quantized per token (int8 weights only)
  std::vector<std::uint8_t> data;   // [n, packed_row_bytes(fmt, k)]
  std::vector<float> scales;        // [n, k / group]
  std::vector<std::uint8_t> zeros;  // [n, k / group] when asym
  int rank = 0;                     // LoRC: y += (x @ lorc_a) @ lorc_b
  std::vector<float> lorc_a;        // [k, rank]
  std::vector<float> lorc_b;        // [rank, n]
  std::vector<std::uint16_t> bf16;  // [n, k] bf16 bits: a bf16 linear (the fields above unused)
  // A GGUF file's matrix read in place (issue 18; lm_quant::owner keeps the mapping): n rows of
  // k in one of kernels/ggml_quant.hpp's formats (the fields above unused).
  kernels::ggml_matrix ggml{};

  bool is_bf16() const { return !bf16.empty(); }
  bool is_ggml() const { return ggml.data != nullptr; }

  kernels::qmatrix view() const;
  // Bytes a forward reads: packed data (or bf16 rows), scales, zeros and the LoRC factors.
  std::size_t bytes() const;
  // y [m, n] (row stride ldy) = x [m, k] (row stride ldx) @ W (+ bias [n]) (+ y's previous values
  // when accumulate). LoRC's [m, rank] intermediate lives in a per-thread buffer reused across
  // calls.
  void forward(const float* x, int ldx, int m, const float* bias, float* y, int ldy,
               bool accumulate) const;
};

// A block's quantized projections; null ones stay fp32. MoE layers: experts[e] holds expert e's
// up and down projections (its qkv and o null); null: the experts stay fp32.
struct block_quant {
  const quant_linear *qkv = nullptr, *o = nullptr, *up = nullptr, *down = nullptr;
  const block_quant* experts = nullptr;
};

// A model's quantized linears: what lm_weights (serving) and the transformer (score mode) carry.
struct lm_quant {
  std::string scheme;  // "w4a16", "fp6", ... (runtime/quant), "bf16" (lm_bf16)
  std::string method;  // "rtn" or "gptq" (+ "+lorc", "+lkd")
  // 4 per layer: qkv, o, up, down; an MoE layer without a dense MLP has empty (n = 0) up and
  // down, linked as null.
  std::vector<quant_linear> linears;
  std::unique_ptr<quant_linear> head;  // null: the head stays fp32
  std::shared_ptr<const void> owner;   // what in-place linears point into (a GGUF file)
  std::vector<block_quant> blocks;     // [n_layer], views into linears (set by link())
  // MoE models (bf16 only): layer_experts [n_layer] experts each layer's share of
  // expert_linears holds (0 for dense layers or fp32 experts); expert_linears 2 per expert (up,
  // down), layers in order; expert_blocks [n_layer][experts] their views (link()).
  std::vector<int> layer_experts;
  std::vector<quant_linear> expert_linears;
  std::vector<std::vector<block_quant>> expert_blocks;
  // Points blocks at linears; call after linears is filled (and after any move of lm_quant's
  // vector storage).
  void link();
  // Bytes of every quantized matrix (with scales, zeros, LoRC).
  std::size_t bytes() const;
};

}  // namespace zf
