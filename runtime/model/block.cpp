// Block math shared by train, score and paged modes (see block.hpp for the equations).
#include "runtime/model/block.hpp"

#include <vector>

#include "kernels/activation.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/rope.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/quant_linear.hpp"

namespace zf::block {
namespace k = zf::kernels;

namespace {

bool is_llama(const model_spec& s) {
  return s.arch == model_arch::llama;
}

// y[r, :] += b for each of n rows of width c (b null: none).
void add_bias(float* y, const float* b, int n, int c) {
  k::bias_add(y, b, n, c);
}

// y [n, out] = x_in + a [n, in] @ w [in, out] (+ b); y may be x_in. q: the quantized weight
// that replaces w, or null.
void residual_linear(const float* a, int lda, const float* w, const quant_linear* q, const float* b,
                     const float* x_in, float* y, int n, int in, int out) {
  if (!x_in) {  // no residual: y = a @ w (+ b) (an MoE expert's output)
    if (q) return q->forward(a, lda, n, b, y, out, false);
    k::gemm(false, false, n, out, in, 1.0f, a, lda, w, out, 0.0f, y, out);
    return add_bias(y, b, n, out);
  }
  if (y != x_in) k::copy(y, x_in, static_cast<std::size_t>(n) * out);
  if (q) return q->forward(a, lda, n, b, y, out, true);
  k::gemm(false, false, n, out, in, 1.0f, a, lda, w, out, 1.0f, y, out);
  add_bias(y, b, n, out);
}

// y [n, out] = x [n, in] @ w (+ b), w fp32 [in, out] or the quantized q.
void linear(const float* x, const float* w, const quant_linear* q, const float* b, float* y, int n,
            int in, int out) {
  if (q) return q->forward(x, in, n, b, y, out, false);
  k::gemm(false, false, n, out, in, 1.0f, x, in, w, out, 0.0f, y, out);
  add_bias(y, b, n, out);
}

// bf16 operands (operands16): y [n, out] = beta * y + x [n, in] (row stride ldx) @ w (+ b), with
// x rounded into x16 [n, in] and w into w16 [in, out] on the way, both kept for the backward.
void linear16(const float* x, int ldx, const float* w, std::uint16_t* x16, std::uint16_t* w16,
              const float* b, float beta, float* y, int n, int in, int out) {
  k::round_bf16(w, in, out, 0, w16);
  k::round_bf16(x, n, in, ldx, x16);
  k::gemm_bf16(false, false, n, out, in, 1.0f, x16, in, w16, out, beta, y, out);
  add_bias(y, b, n, out);
}

// The quantized projections of w (null members when fp32).
const block_quant& quant_of(const weights& w) {
  static const block_quant none;
  return w.quant ? *w.quant : none;
}

void no_training(const weights& w) {
  if (w.quant) fail("a quantized model runs forward only: its linears cannot be trained");
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

void fill_rope_table(const model_spec& s, float* cos, float* sin, device where) {
  if (where == device::cpu) return fill_rope_table(s, cos, sin);
  const std::size_t rt = rope_table_floats(s);
  if (!rt) return;
  std::vector<float> table(2 * rt);
  {
    const k::device_scope host(device::cpu);  // the tables' kernel is the cpu's
    fill_rope_table(s, table.data(), table.data() + rt);
  }
  copy_from_host(where, cos, table.data(), rt);
  copy_from_host(where, sin, table.data() + rt, rt);
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
                 const rope_table& rope, int n, const operands16* o16) {
  const int C = s.hidden, D = s.qkv_dim();
  if (o16)
    linear16(ln, C, w.qkv_w, o16->ln1, o16->qkv_w, w.qkv_b, 0.0f, qkv, n, C, D);
  else
    linear(ln, w.qkv_w, quant_of(w).qkv, w.qkv_b, qkv, n, C, D);
  if (!is_llama(s)) return;
  k::rope_forward(qkv, D, n, pos, s.n_head, s.head_dim, rope.cos, rope.sin);
  k::rope_forward(qkv + s.q_dim(), D, n, pos, s.n_kv_head, s.head_dim, rope.cos, rope.sin);
}

void qkv_backward(const model_spec& s, const weights& w, const grads& g, const float* ln,
                  float* dqkv, float* dln, const int* pos, const rope_table& rope, int n,
                  const operands16* o16) {
  const int C = s.hidden, D = s.qkv_dim();
  no_training(w);
  if (is_llama(s)) {
    k::rope_backward(dqkv, D, n, pos, s.n_head, s.head_dim, rope.cos, rope.sin);
    k::rope_backward(dqkv + s.q_dim(), D, n, pos, s.n_kv_head, s.head_dim, rope.cos, rope.sin);
  }
  if (o16)
    k::linear_backward_bf16(o16->ln1, o16->qkv_w, dqkv, dln, g.qkv_w, g.qkv_b, n, C, D);
  else
    k::linear_backward(ln, w.qkv_w, dqkv, dln, g.qkv_w, g.qkv_b, n, C, D);
}

void attn_out_forward(const model_spec& s, const weights& w, const float* att, int ld_att,
                      const float* x_in, float* x_out, int n, const operands16* o16) {
  if (!o16)
    return residual_linear(att, ld_att, w.o_w, quant_of(w).o, w.o_b, x_in, x_out, n, s.q_dim(),
                           s.hidden);
  if (x_out != x_in) k::copy(x_out, x_in, std::size_t(n) * s.hidden);
  linear16(att, ld_att, w.o_w, o16->att, o16->o_w, w.o_b, 1.0f, x_out, n, s.q_dim(), s.hidden);
}

void attn_out_backward(const model_spec& s, const weights& w, const grads& g, const float* att,
                       const float* dx, float* datt, int n, const operands16* o16) {
  no_training(w);
  if (o16)
    k::linear_backward_bf16(o16->att, o16->o_w, dx, datt, g.o_w, g.o_b, n, s.q_dim(), s.hidden);
  else
    k::linear_backward(att, w.o_w, dx, datt, g.o_w, g.o_b, n, s.q_dim(), s.hidden);
}

void mlp_forward(const model_spec& s, const weights& w, const float* ln2, float* h, float* a,
                 const float* x_in, float* x_out, int n, const operands16* o16) {
  const int C = s.hidden, I = s.intermediate, U = s.up_dim();
  const std::size_t nI = static_cast<std::size_t>(n) * I;
  if (o16) {  // bf16 operands; the activation in bf16 only (x_in: the dense MLP's residual)
    linear16(ln2, C, w.up_w, o16->ln2, o16->up_w, w.up_b, 0.0f, h, n, C, U);
    if (is_llama(s)) {
      k::swiglu_forward(h, a, n, I);
      k::round_bf16(a, n, I, 0, o16->act);
    } else {
      k::gelu_forward_bf16(h, o16->act, nI);
    }
    if (x_in && x_out != x_in) k::copy(x_out, x_in, std::size_t(n) * C);
    k::round_bf16(w.down_w, I, C, 0, o16->down_w);
    k::gemm_bf16(false, false, n, C, I, 1.0f, o16->act, I, o16->down_w, C, x_in ? 1.0f : 0.0f,
                 x_out, C);
    return add_bias(x_out, w.down_b, n, C);
  }
  linear(ln2, w.up_w, quant_of(w).up, w.up_b, h, n, C, U);
  float* act = a ? a : h;
  if (is_llama(s))
    k::swiglu_forward(h, act, n, I);
  else
    k::gelu_forward(h, act, nI);
  residual_linear(act, I, w.down_w, quant_of(w).down, w.down_b, x_in, x_out, n, I, C);
}

void mlp_backward(const model_spec& s, const weights& w, const grads& g, const float* ln2,
                  const float* h, float* a, const float* dx, float* dh, float* dln2, int n,
                  const operands16* o16) {
  const int C = s.hidden, I = s.intermediate, U = s.up_dim();
  const std::size_t nI = static_cast<std::size_t>(n) * I;
  const bool llama = is_llama(s);
  no_training(w);
  // da [n, I] = dx @ down_w^T, written densely into the front of dh. Without kept operands the
  // activation is recomputed first (training keeps only the pre-activation h).
  if (o16) {
    k::linear_backward_bf16(o16->act, o16->down_w, dx, dh, g.down_w, g.down_b, n, I, C);
  } else {
    if (llama)
      k::swiglu_forward(h, a, n, I);
    else
      k::gelu_forward(h, a, nI);
    k::linear_backward(a, w.down_w, dx, dh, g.down_w, g.down_b, n, I, C);
  }
  if (llama) {
    // swiglu_backward may not write over its input: da moves into a (the activation is spent).
    k::copy(a, dh, nI);
    k::swiglu_backward(h, a, dh, n, I);
  } else {
    k::gelu_backward(h, dh, dh, nI);
  }
  if (o16)
    k::linear_backward_bf16(o16->ln2, o16->up_w, dh, dln2, g.up_w, g.up_b, n, C, U);
  else
    k::linear_backward(ln2, w.up_w, dh, dln2, g.up_w, g.up_b, n, C, U);
}

}  // namespace zf::block
