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
#include "runtime/core/model_spec.hpp"
#include "runtime/model/layout.hpp"

namespace zf::block {

using weights = block_tensors<const float>;
using grads = block_tensors<float>;

// RoPE cos/sin tables: [max_positions, head_dim/2] each (kernels/rope.hpp).
struct rope_table {
  const float* cos = nullptr;
  const float* sin = nullptr;
};

// Floats a rope table for s needs (0 for GPT-2), and filling it into cos, sin.
std::size_t rope_table_floats(const model_spec& s);
void fill_rope_table(const model_spec& s, float* cos, float* sin);

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
                 const rope_table& rope, int n);
// dqkv [n, D] (the gradient w.r.t. the rotated qkv; un-rotated in place) -> dln [n, C]
// OVERWRITTEN; qkv_w/qkv_b gradients accumulated.
void qkv_backward(const model_spec& s, const weights& w, const grads& g, const float* ln,
                  float* dqkv, float* dln, const int* pos, const rope_table& rope, int n);

// x_out [n, C] = x_in + att [n, Q] @ o_w (+ o_b). x_out may be x_in (in place).
void attn_out_forward(const model_spec& s, const weights& w, const float* att, int ld_att,
                      const float* x_in, float* x_out, int n);
// dx [n, C] (gradient of x_out; the residual passes through unchanged) -> datt [n, Q]
// OVERWRITTEN; o_w/o_b gradients accumulated.
void attn_out_backward(const model_spec& s, const weights& w, const grads& g, const float* att,
                       const float* dx, float* datt, int n);

// h [n, U] = ln2 @ up_w (+ up_b); a [n, I] = act(h); x_out [n, C] = x_in + a @ down_w (+ down_b).
// x_in null: no residual, x_out = a @ down_w (+ down_b) (an MoE expert, runtime/model/moe).
// a may be null for GPT-2 (GELU runs in place over h, which then no longer holds the
// pre-activation); training passes a separate a so that h survives for backward.
void mlp_forward(const model_spec& s, const weights& w, const float* ln2, float* h, float* a,
                 const float* x_in, float* x_out, int n);
// dx [n, C] -> dln2 [n, C] OVERWRITTEN. h: the saved pre-activation; a: [n, I] scratch (the
// activation is recomputed into it); dh: [n, U] scratch. Weight gradients accumulated.
void mlp_backward(const model_spec& s, const weights& w, const grads& g, const float* ln2,
                  const float* h, float* a, const float* dx, float* dh, float* dln2, int n);

}  // namespace zf::block
