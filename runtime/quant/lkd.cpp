// Layer-by-layer knowledge distillation (lkd.hpp).
#include "runtime/quant/lkd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "kernels/quant.hpp"
#include "runtime/core/error.hpp"

namespace zf::quant {

namespace k = zf::kernels;
using sz = std::size_t;

namespace {

model_spec one_layer(model_spec s) {
  s.n_layer = 1;
  return s;
}

}  // namespace

float* layer_runner::access::acquire(int region) {
  if (region != 1) fail("layer_runner: region {} asked of a lone block", region);
  return buf;
}

layer_runner::layer_runner(const model_spec& s)
    : full_(make_layout(s)),
      m_(std::make_unique<transformer>(one_layer(s), false, false)),
      one_(std::make_shared<lm_quant>()) {
  const region& r = m_->layout().regions[1];
  if (r.size() != full_.regions[1].size())
    fail("layer_runner: a one-layer model's block has {} floats, the model's {}", r.size(),
         full_.regions[1].size());
  p_.assign(r.size(), 0.0f);
  g_.assign(r.size(), 0.0f);
  pa_.buf = p_.data();
  ga_.buf = g_.data();
  m_->set_param_access(&pa_);
  m_->set_grad_access(&ga_);
  one_->blocks.resize(1);
}

void layer_runner::load(const float* flat, int l) {
  const region& r = full_.regions[sz(l) + 1];
  std::memcpy(p_.data(), flat + r.begin, r.size() * sizeof(float));
}

block_tensors<float> layer_runner::weights() {
  return m_->layout().block<float>(p_.data(), 0, m_->layout().regions[1].begin);
}

block_tensors<float> layer_runner::grads() {
  return m_->layout().block<float>(g_.data(), 0, m_->layout().regions[1].begin);
}

void layer_runner::zero_grad() {
  std::fill(g_.begin(), g_.end(), 0.0f);
}

void layer_runner::set_quant(const block_quant* q) {
  if (!q) return m_->set_quant(nullptr);
  one_->blocks[0] = *q;
  m_->set_quant(one_);
}

namespace {

// The fake quantization of a master m [k, n] (element (j, o) at m[j * n + o]) on q's scales and
// zeros: code = nearest on the grid, written as its value into w (fake), or packed into q.data.
void fake_quantize(const quant_linear& q, const float* m, float* w) {
  const int G = q.k / q.group;
  for (int j = 0; j < q.k; ++j)
    for (int o = 0; o < q.n; ++o) {
      const sz g = sz(o) * G + sz(j / q.group), e = sz(j) * q.n + o;
      const int z = q.asym ? q.zeros[g] : 0;
      const unsigned c = k::quantize_value(q.fmt, m[e], q.scales[g], z, q.asym);
      w[e] = k::dequantize_value(q.fmt, c, q.scales[g], z, q.asym);
    }
}

void requantize(quant_linear& q, const float* m) {
  const int G = q.k / q.group;
  const sz rb = k::packed_row_bytes(q.fmt, q.k);
  std::vector<std::uint8_t> codes(static_cast<sz>(q.k));
  for (int o = 0; o < q.n; ++o) {
    for (int j = 0; j < q.k; ++j) {
      const sz g = sz(o) * G + sz(j / q.group);
      codes[sz(j)] = static_cast<std::uint8_t>(k::quantize_value(
          q.fmt, m[sz(j) * q.n + o], q.scales[g], q.asym ? q.zeros[g] : 0, q.asym));
    }
    k::pack_row(q.fmt, codes.data(), q.k, q.data.data() + sz(o) * rb);
  }
}

// Everything one layer's LKD allocates, once: masters with their Adam moments, and the rows of
// one step (x, teacher y, output / gradient) [windows * t, C].
struct lkd_state {
  std::vector<float> master[4], m1[4], m2[4];
  std::vector<float> xb, yb, out;
};

// Sum over the rows of a [rows, C] block of (out - y)^2; with d, d = scale * 2 (out - y) in place
// of out.
double squared_error(float* out, const float* y, sz n, float scale, bool grad) {
  double s = 0;
  for (sz i = 0; i < n; ++i) {
    const float e = out[i] - y[i];
    s += double(e) * e;
    if (grad) out[i] = scale * 2.0f * e;
  }
  return s;
}

// Mean (over rows and channels) squared error of the block, as it is, against y on every window,
// `per` windows per forward.
double block_mse(layer_runner& run, const float* x, const float* y, int windows, int t, int per,
                 std::vector<float>& out) {
  const sz C = sz(run.spec().hidden), rows = sz(t) * C;
  double s = 0;
  for (int w0 = 0; w0 < windows; w0 += per) {
    const int b = std::min(per, windows - w0);
    run.forward(x + sz(w0) * rows, b, t, out.data());
    s += squared_error(out.data(), y + sz(w0) * rows, sz(b) * rows, 0, false);
  }
  return s / (double(windows) * rows);
}

}  // namespace

lkd_report lkd_layer(layer_runner& run, const float* x, const float* y, int windows, int t,
                     quant_linear* const q[4], const float* const init[4], const lkd_options& o) {
  const sz C = sz(run.spec().hidden);
  const int bw = std::max(1, std::min(o.windows, windows));
  const sz rows = sz(t) * C, step_n = sz(bw) * rows;
  lkd_state st;
  st.xb.resize(step_n);
  st.yb.resize(step_n);
  st.out.resize(step_n);
  const auto w = run.weights(), g = run.grads();
  float* const ws[4] = {w.qkv_w, w.o_w, w.up_w, w.down_w};
  const float* const gs[4] = {g.qkv_w, g.o_w, g.up_w, g.down_w};
  for (int i = 0; i < 4; ++i) {
    const sz n = sz(q[i]->k) * q[i]->n;
    st.master[i].assign(init[i], init[i] + n);
    st.m1[i].assign(n, 0.0f);
    st.m2[i].assign(n, 0.0f);
    fake_quantize(*q[i], st.master[i].data(), ws[i]);
  }
  run.set_quant(nullptr);  // the fake-quantized fp32 weights: trainable, the same forward as q
  lkd_report rep;
  rep.mse_before = block_mse(run, x, y, windows, t, bw, st.out);
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  for (int s = 0; s < o.steps; ++s) {
    for (int j = 0; j < bw; ++j) {  // windows s*bw .. s*bw + bw - 1, cycling
      const sz src = sz((s * bw + j) % windows) * rows;
      std::memcpy(st.xb.data() + sz(j) * rows, x + src, rows * sizeof(float));
      std::memcpy(st.yb.data() + sz(j) * rows, y + src, rows * sizeof(float));
    }
    run.forward(st.xb.data(), bw, t, st.out.data());
    squared_error(st.out.data(), st.yb.data(), step_n, 1.0f / float(step_n), true);
    run.zero_grad();
    run.backward(st.xb.data(), bw, t, st.out.data());
    // cosine decay: the last steps settle the masters instead of flipping codes back and forth
    const double lr = o.lr * 0.5 * (1 + std::cos(std::numbers::pi * s / o.steps));
    const double c1 = 1 - std::pow(b1, s + 1), c2 = 1 - std::pow(b2, s + 1);
    for (int i = 0; i < 4; ++i) {
      float *m = st.master[i].data(), *v1 = st.m1[i].data(), *v2 = st.m2[i].data();
      const sz n = st.master[i].size();
      for (sz e = 0; e < n; ++e) {  // straight through: d(dequantized) updates the master
        const float gr = gs[i][e];
        v1[e] = b1 * v1[e] + (1 - b1) * gr;
        v2[e] = b2 * v2[e] + (1 - b2) * gr * gr;
        m[e] -= float(lr * (v1[e] / c1) / (std::sqrt(v2[e] / c2) + eps));
      }
      fake_quantize(*q[i], m, ws[i]);
    }
  }
  rep.mse_after = block_mse(run, x, y, windows, t, bw, st.out);
  rep.improved = rep.mse_after < rep.mse_before;
  if (rep.improved)
    for (int i = 0; i < 4; ++i) requantize(*q[i], st.master[i].data());
  return rep;
}

}  // namespace zf::quant
