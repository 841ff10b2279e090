// Softmax + cross-entropy family, CPU reference, fp32.
// Invariants: one row at a time in three sweeps (max; exp stored in place + sum; scale). A vocab
// row (50257 floats, 196 KiB) stays in L2 between sweeps, so main memory sees the logits read once
// and written once. exp is an 8-lane Cephes-style polynomial (about 1 ulp); sums of exp run in
// float lanes flushed into a double every 512 elements, so a 50k-wide row keeps ~1e-7 relative
// accuracy. The loss is logsumexp(x) - x[t] with the max subtracted first, as torch's
// log_softmax + nll_loss. Nothing here allocates.
#include <cmath>
#include <cstddef>
#include <cstring>

#include "kernels/softmax.hpp"
#include "kernels/vec8.hpp"

namespace zf::kernels::cpu {
namespace {

using namespace vec8;

inline float vexp1(float x) {
  v8f v = v8f{} + x;
  return vexp(v)[0];
}

// max over x[0..v) * scale.
float row_max(const float* x, std::size_t v, float scale) {
  v8f m0 = v8f{} - __builtin_inff(), m1 = m0;
  std::size_t j = 0;
  for (; j + 16 <= v; j += 16) {
    const v8f a = load8(x + j) * scale, b = load8(x + j + 8) * scale;
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  float m = m0[0];
  for (int l = 1; l < 8; ++l) m = m0[l] > m ? m0[l] : m;
  for (; j < v; ++j) m = x[j] * scale > m ? x[j] * scale : m;
  return m;
}

// Sum of exp(x[j] * scale - mx); when out is not null, out[j] receives each exp (out may be x).
double exp_sum(const float* x, float* out, std::size_t v, float scale, float mx) {
  double total = 0.0;
  std::size_t j = 0;
  while (j + 16 <= v) {
    v8f a0 = {}, a1 = {};
    const std::size_t end = (v - j) / 16 > 32 ? j + 512 : j + (v - j) / 16 * 16;
    for (; j < end; j += 16) {
      const v8f e0 = vexp(load8(x + j) * scale - mx), e1 = vexp(load8(x + j + 8) * scale - mx);
      if (out != nullptr) {
        store8(out + j, e0);
        store8(out + j + 8, e1);
      }
      a0 += e0;
      a1 += e1;
    }
    total += static_cast<double>(hsum(a0 + a1));
  }
  for (; j < v; ++j) {
    const float e = vexp1(x[j] * scale - mx);
    if (out != nullptr) out[j] = e;
    total += static_cast<double>(e);
  }
  return total;
}

void scale_row(float* x, std::size_t v, float s) {
  std::size_t j = 0;
  for (; j + 8 <= v; j += 8) store8(x + j, load8(x + j) * s);
  for (; j < v; ++j) x[j] *= s;
}

}  // namespace

// logits: [n, v] (in place -> dlogits), targets: [n], loss: [n].
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss) {
  const std::size_t vv = static_cast<std::size_t>(v);
  for (int r = 0; r < n; ++r) {
    float* x = logits + r * vv;
    const int t = targets[r];
    if (t < 0) {
      loss[r] = 0.0f;
      std::memset(x, 0, vv * sizeof(float));
      continue;
    }
    const float mx = row_max(x, vv, 1.0f);
    const float xt = x[t];
    const double sum = exp_sum(x, x, vv, 1.0f, mx);
    const double logsum = std::log(sum);
    // torch: -log_softmax[t] = -((x[t] - max) - log(sum))
    loss[r] = static_cast<float>(logsum - static_cast<double>(xt - mx));
    const float et = x[t];
    scale_row(x, vv, static_cast<float>(static_cast<double>(dloss) / sum));
    x[t] = (static_cast<float>(static_cast<double>(et) / sum) - 1.0f) * dloss;
  }
}

// logits: [n, v] (read only), targets: [n] -> loss: [n].
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v) {
  const std::size_t vv = static_cast<std::size_t>(v);
  for (int r = 0; r < n; ++r) {
    const float* x = logits + r * vv;
    const int t = targets[r];
    if (t < 0) {
      loss[r] = 0.0f;
      continue;
    }
    const float mx = row_max(x, vv, 1.0f);
    const double logsum = std::log(exp_sum(x, nullptr, vv, 1.0f, mx));
    loss[r] = static_cast<float>(logsum - static_cast<double>(x[t] - mx));
  }
}

// x: [n, v] in place: x[r] = softmax(x[r] * scale).
void softmax_rows(float* x, int n, int v, float scale) {
  const std::size_t vv = static_cast<std::size_t>(v);
  for (int r = 0; r < n; ++r) {
    float* xr = x + r * vv;
    const float mx = row_max(xr, vv, scale);
    const double sum = exp_sum(xr, xr, vv, scale, mx);
    scale_row(xr, vv, static_cast<float>(1.0 / sum));
  }
}

// x: [n]. Scalar on purpose: a fixed order, the same everywhere it is called.
double log_sum_exp(const float* x, int n) {
  float mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(x[i] - mx);
  return mx + std::log(sum);
}

}  // namespace zf::kernels::cpu
