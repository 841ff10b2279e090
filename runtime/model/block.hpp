#pragma once
// The transformer block's math, shared by the three modes so a token's numbers come from one
// piece of code: train (runtime/model/model: forward saving activations, then backward), score
// (runtime/model/model, forward only) and paged (runtime/lm: ragged rows over the KV block pool).
// Only attention differs between modes (dense causal per sequence vs paged), so a block is:
//   ln1 = norm1(x)                       LayerNorm (gpt2) or RMSNorm (llama)
//   qkv = ln1 @ qkv_w (+ qkv_b); rope on q and k heads (llama)
//   att = attention(q, k, v)             mode-specific
//   x2  = x + att @ o_w (+ o_b)
//   ln2 = norm2(x2)
//   h   = ln2 @ up_w (+ up_b);  a = gelu(h) (gpt2) | silu(gate) * up (llama)
//   x3  = x2 + a @ down_w (+ down_b)
// Rows are tokens: n rows, C = hidden, Q = q_dim, D = qkv_dim, U = up_dim, I = intermediate.
// Nothing here allocates; backward functions ACCUMULATE weight gradients (+=).
#include <cstdint>

#include "runtime/core/model_spec.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/model/layout.hpp"

namespace zf::block {

using weights = block_tensors<const float>;
using grads = block_tensors<float>;

// Mixed-precision (bf16) training: one block's GEMM operands, rounded to bf16 once by its
// forward and kept for its backward, so each weight and each linear's input is rounded once per
// step instead of once per GEMM (the same bits: the rounding is deterministic). Weights
// [in, out] as the fp32 ones; inputs [n, in] dense: ln1 [n, C], att [n, Q], ln2 [n, C] and the
// MLP's activation act [n, I], which the forward writes in bf16 only (GELU rounds as it goes) and
// the backward then does not recompute. Blocks given none (null) run every GEMM at the thread's
// precision as before: fp32 runs, score and paged modes, quantized weights.
struct operands16 {
  std::uint16_t *qkv_w = nullptr, *o_w = nullptr, *up_w = nullptr, *down_w = nullptr;
  std::uint16_t *ln1 = nullptr, *att = nullptr, *ln2 = nullptr, *act = nullptr;
};

// RoPE cos/sin tables: [max_positions, head_dim/2] each (kernels/rope.hpp).
struct rope_table {
  const float* cos = nullptr;
  const float* sin = nullptr;
};

// Floats a rope table for s needs (0 for GPT-2), and filling it into cos, sin.
std::size_t rope_table_floats(const model_spec& s);
void fill_rope_table(const model_spec& s, float* cos, float* sin);
// The same tables into memory on `where` (cuda: built on the host, then copied up).
void fill_rope_table(const model_spec& s, float* cos, float* sin, device where);

// y[n, C] = norm(x) with the spec's norm; mean/rstd [n] saved for backward when not null
// (RMSNorm saves only rstd). b is null for RMSNorm.
void norm_forward(const model_spec& s, const float* x, const float* w, const float* b, float* y,
                  float* mean, float* rstd, int n);
// dy [n, C] -> dx [n, C] ACCUMULATED, dw/db [C] ACCUMULATED (db ignored for RMSNorm).
void norm_backward(const model_spec& s, const float* x, const float* w, const float* mean,
                   const float* rstd, const float* dy, float* dx, float* dw, float* db, int n);

// qkv [n, D] = ln [n, C] @ qkv_w (+ qkv_b), then (llama) q and k heads rotated to the positions
// pos [n].
void qkv_forward(const model_spec& s, const weights& w, const float* ln, float* qkv, const int* pos,
                 const rope_table& rope, int n, const operands16* o16 = nullptr);
// dqkv [n, D] (the gradient w.r.t. the rotated qkv; un-rotated in place) -> dln [n, C]
// OVERWRITTEN; qkv_w/qkv_b gradients accumulated.
void qkv_backward(const model_spec& s, const weights& w, const grads& g, const float* ln,
                  float* dqkv, float* dln, const int* pos, const rope_table& rope, int n,
                  const operands16* o16 = nullptr);

// x_out [n, C] = x_in + att [n, Q] @ o_w (+ o_b). x_out may be x_in (in place).
void attn_out_forward(const model_spec& s, const weights& w, const float* att, int ld_att,
                      const float* x_in, float* x_out, int n, const operands16* o16 = nullptr);
// dx [n, C] (gradient of x_out; the residual passes through unchanged) -> datt [n, Q]
// OVERWRITTEN; o_w/o_b gradients accumulated.
void attn_out_backward(const model_spec& s, const weights& w, const grads& g, const float* att,
                       const float* dx, float* datt, int n, const operands16* o16 = nullptr);

// h [n, U] = ln2 @ up_w (+ up_b); a [n, I] = act(h); x_out [n, C] = x_in + a @ down_w (+ down_b).
// x_in null: no residual, x_out = a @ down_w (+ down_b) (an MoE expert, runtime/model/moe).
// a may be null for GPT-2 (GELU runs in place over h, which then no longer holds the
// pre-activation); training passes a separate a so that h survives for backward. With o16 the
// activation goes to o16->act in bf16 (a is then only Llama's fp32 scratch).
void mlp_forward(const model_spec& s, const weights& w, const float* ln2, float* h, float* a,
                 const float* x_in, float* x_out, int n, const operands16* o16 = nullptr);
// dx [n, C] -> dln2 [n, C] OVERWRITTEN. h: the saved pre-activation; a: [n, I] scratch (the
// activation is recomputed into it, unless o16 kept it); dh: [n, U] scratch. Weight gradients
// accumulated.
void mlp_backward(const model_spec& s, const weights& w, const grads& g, const float* ln2,
                  const float* h, float* a, const float* dx, float* dh, float* dln2, int n,
                  const operands16* o16 = nullptr);

}  // namespace zf::block
