// AdamW family, CPU reference, fp32, matching torch.optim.AdamW (single-tensor CPU path) operation
// by operation:
//   p *= 1 - lr*wd;  m = lerp(m, g, 1 - b1);  v = v*b2 + (1 - b2)*g*g;
//   p += (-lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t,
// with the scalar coefficients computed in double as Python does and rounded to float once.
// The hyperparameters arrive as floats; each is widened through its shortest decimal form
// (0.95f -> 0.95), which is the double a Python config would have held, so b2^t and the rounded
// coefficients come out as torch's. adamw_coefficients_of (below) computes them once per call
// for every backend, so the cuda twin (adamw_cuda.cu) applies the same floats. One pass over p, g,
// m, v; nothing here allocates.
#include <charconv>
#include <cmath>
#include <cstring>

#include "kernels/adamw.hpp"
#include "kernels/vec8.hpp"
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace zf::kernels {
namespace {

double decimal(float f) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, f).ptr;
  double d = f;
  std::from_chars(buf, end, d);
  return d;
}

}  // namespace

adamw_coefficients adamw_coefficients_of(const adamw_params& a) {
  const double lr = decimal(a.lr), b1 = decimal(a.beta1), b2 = decimal(a.beta2);
  const double wd = decimal(a.weight_decay);
  const double t = static_cast<double>(a.step);
  adamw_coefficients c{};
  c.decay = static_cast<float>(1.0 - lr * wd);
  const float w1 = static_cast<float>(1.0 - b1);  // lerp weight
  c.small = std::abs(w1) < 0.5f;                  // torch's lerp switches form at 0.5
  c.c1 = c.small ? w1 : w1 - 1.0f;
  c.b2 = static_cast<float>(b2);
  c.w2 = static_cast<float>(1.0 - b2);
  c.neg_step = static_cast<float>(-(lr / (1.0 - std::pow(b1, t))));
  c.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, t)));
  c.eps = a.eps;
  c.grad_scale = a.grad_scale;
  return c;
}

}  // namespace zf::kernels

namespace zf::kernels::cpu {
namespace {

using namespace vec8;
using v4f = float __attribute__((vector_size(16)));
using v4d = double __attribute__((vector_size(32)));

inline v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Lane-wise IEEE square root (std::sqrt in a loop does not vectorize while it may set errno).
inline v8f vsqrt(v8f x) {
#if defined(__AVX__)
  return (v8f)_mm256_sqrt_ps((__m256)x);
#else
  v8f r;
  for (int l = 0; l < 8; ++l) r[l] = std::sqrt(x[l]);
  return r;
#endif
}

}  // namespace

// p, m, v: [n] updated in place; g: [n] read only.
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n,
                const adamw_params& a) {
  const adamw_coefficients c = adamw_coefficients_of(a);
  const float decay = c.decay, c1 = c.c1, b2f = c.b2, w2 = c.w2, neg_step = c.neg_step;
  const float bc2_sqrt = c.bc2_sqrt, eps = c.eps, gs = c.grad_scale;
  const bool small = c.small;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f gv = load8(g + i) * gs;
    v8f mv = load8(m + i), vv = load8(v + i), pv = load8(p + i);
    pv = pv * decay;
    mv = c1 * (gv - mv) + (small ? mv : gv);
    vv = vv * b2f;
    vv = vv + w2 * gv * gv;
    pv = pv + neg_step * mv / (vsqrt(vv) / bc2_sqrt + eps);
    store8(p + i, pv);
    store8(m + i, mv);
    store8(v + i, vv);
  }
  for (; i < n; ++i) {
    const float gv = g[i] * gs;
    float pv = p[i] * decay;
    const float mv = c1 * (gv - m[i]) + (small ? m[i] : gv);
    float vv = v[i] * b2f;
    vv = vv + w2 * gv * gv;
    pv = pv + neg_step * mv / (std::sqrt(vv) / bc2_sqrt + eps);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
  }
}

// sum of x[i]^2 in double.
double sum_squares(const float* x, std::size_t n) {
  v4d a0 = {}, a1 = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v4d d0 = __builtin_convertvector(load4(x + i), v4d);
    const v4d d1 = __builtin_convertvector(load4(x + i + 4), v4d);
    a0 += d0 * d0;
    a1 += d1 * d1;
  }
  const v4d a = a0 + a1;
  double s = (a[0] + a[2]) + (a[1] + a[3]);
  for (; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace zf::kernels::cpu
