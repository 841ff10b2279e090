// Block math shared by train, score and paged modes (see block.hpp for the equations).
#include "runtime/model/block.hpp"

#include <cstring>

#include "kernels/activation.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/rope.hpp"

namespace zf::block {
namespace k = zf::kernels;

namespace {

bool is_llama(const model_spec& s) {
  return s.arch == model_arch::llama;
}

// y[r, :] += b for each of n rows of width c.
void add_bias(float* y, const float* b, int n, int c) {
  if (b == nullptr) return;
  for (int r = 0; r < n; ++r) k::accumulate(y + static_cast<std::size_t>(r) * c, b, c);
}

// y [n, out] = x_in + a [n, in] @ w [in, out] (+ b); y may be x_in.
void residual_linear(const float* a, int lda, const float* w, const float* b, const float* x_in,
                     float* y, int n, int in, int out) {
  if (y != x_in) std::memcpy(y, x_in, static_cast<std::size_t>(n) * out * sizeof(float));
  k::gemm(false, false, n, out, in, 1.0f, a, lda, w, out, 1.0f, y, out);
  add_bias(y, b, n, out);
}

}  // namespace

std::size_t rope_table_floats(const model_spec& s) {
  return is_llama(s) ? static_cast<std::size_t>(s.max_positions) * (s.head_dim / 2) : 0;
}

void fill_rope_table(const model_spec& s, float* cos, float* sin) {
  if (!is_llama(s)) return;
  const std::vector<double> inv_freq = rope_inv_freq(s);
  k::rope_tables(s.max_positions, s.head_dim, inv_freq.data(), cos, sin);
}

void norm_forward(const model_spec& s, const float* x, const float* w, const float* b, float* y,
                  float* mean, float* rstd, int n) {
  if (is_llama(s))
    k::rmsnorm_forward(x, w, y, rstd, n, s.hidden, s.norm_eps);
  else
    k::layernorm_forward(x, w, b, y, mean, rstd, n, s.hidden, s.norm_eps);
}

void norm_backward(const model_spec& s, const float* x, const float* w, const float* mean,
                   const float* rstd, const float* dy, float* dx, float* dw, float* db, int n) {
  if (is_llama(s))
    k::rmsnorm_backward(x, w, rstd, dy, dx, dw, n, s.hidden);
  else
    k::layernorm_backward(x, w, mean, rstd, dy, dx, dw, db, n, s.hidden);
}

void qkv_forward(const model_spec& s, const weights& w, const float* ln, float* qkv, const int* pos,
                 const rope_table& rope, int n) {
  const int C = s.hidden, D = s.qkv_dim();
  k::gemm(false, false, n, D, C, 1.0f, ln, C, w.qkv_w, D, 0.0f, qkv, D);
  add_bias(qkv, w.qkv_b, n, D);
  if (!is_llama(s)) return;
  k::rope_forward(qkv, D, n, pos, s.n_head, s.head_dim, rope.cos, rope.sin);
  k::rope_forward(qkv + s.q_dim(), D, n, pos, s.n_kv_head, s.head_dim, rope.cos, rope.sin);
}

void qkv_backward(const model_spec& s, const weights& w, const grads& g, const float* ln,
                  float* dqkv, float* dln, const int* pos, const rope_table& rope, int n) {
  const int C = s.hidden, D = s.qkv_dim();
  if (is_llama(s)) {
    k::rope_backward(dqkv, D, n, pos, s.n_head, s.head_dim, rope.cos, rope.sin);
    k::rope_backward(dqkv + s.q_dim(), D, n, pos, s.n_kv_head, s.head_dim, rope.cos, rope.sin);
  }
  k::linear_backward(ln, w.qkv_w, dqkv, dln, g.qkv_w, g.qkv_b, n, C, D);
}

void attn_out_forward(const model_spec& s, const weights& w, const float* att, int ld_att,
                      const float* x_in, float* x_out, int n) {
  residual_linear(att, ld_att, w.o_w, w.o_b, x_in, x_out, n, s.q_dim(), s.hidden);
}

void attn_out_backward(const model_spec& s, const weights& w, const grads& g, const float* att,
                       const float* dx, float* datt, int n) {
  k::linear_backward(att, w.o_w, dx, datt, g.o_w, g.o_b, n, s.q_dim(), s.hidden);
}

void mlp_forward(const model_spec& s, const weights& w, const float* ln2, float* h, float* a,
                 const float* x_in, float* x_out, int n) {
  const int C = s.hidden, I = s.intermediate, U = s.up_dim();
  k::gemm(false, false, n, U, C, 1.0f, ln2, C, w.up_w, U, 0.0f, h, U);
  add_bias(h, w.up_b, n, U);
  float* act = a ? a : h;
  if (is_llama(s))
    k::swiglu_forward(h, act, n, I);
  else
    k::gelu_forward(h, act, static_cast<std::size_t>(n) * I);
  residual_linear(act, I, w.down_w, w.down_b, x_in, x_out, n, I, C);
}

void mlp_backward(const model_spec& s, const weights& w, const grads& g, const float* ln2,
                  const float* h, float* a, const float* dx, float* dh, float* dln2, int n) {
  const int C = s.hidden, I = s.intermediate, U = s.up_dim();
  const std::size_t nI = static_cast<std::size_t>(n) * I;
  const bool llama = is_llama(s);
  // Recompute the activation (training keeps only the pre-activation h).
  if (llama)
    k::swiglu_forward(h, a, n, I);
  else
    k::gelu_forward(h, a, nI);
  // da [n, I] = dx @ down_w^T, written densely into the front of dh.
  k::linear_backward(a, w.down_w, dx, dh, g.down_w, g.down_b, n, I, C);
  if (llama) {
    // swiglu_backward may not write over its input: da moves into a (the activation is spent).
    std::memcpy(a, dh, nI * sizeof(float));
    k::swiglu_backward(h, a, dh, n, I);
  } else {
    k::gelu_backward(h, dh, dh, nI);
  }
  k::linear_backward(ln2, w.up_w, dh, dln2, g.up_w, g.up_b, n, C, U);
}

}  // namespace zf::block
