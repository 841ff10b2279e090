// Activation family, CPU reference: GELU (tanh approximation), SwiGLU and residual adds, fp32.
// Invariants: element-wise, single pass, no allocation. GELU is evaluated as
//   0.5 x (1 + tanh(u)) = x * sigmoid(2u) = x / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
// which is the same function as torch's GELU(approximate="tanh") but avoids the cancellation in
// 1 + tanh(u) for negative x, and needs only one exp, done 8 lanes at a time with a Cephes-style
// polynomial (about 1 ulp; glibc's expf does not vectorize without -ffast-math).
#include <algorithm>
#include <cstring>

#include "kernels/activation.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/vec8.hpp"

namespace zf::kernels::cpu {
namespace {

using namespace vec8;

constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kKappa = 0.044715f;

inline v8f gelu8(v8f x) {
  const v8f z = (x + kKappa * (x * x * x)) * (-2.0f * kBeta);  // -2u
  return x / (1.0f + vexp(z));  // exp(-2u) = inf for very negative x gives -0, as torch
}

// d/dx [x s] = s + x * 2 s (1 - s) * du/dx with s = sigmoid(2u), and 1 - s = e s where
// e = exp(-2u). Beyond -2u > 80 (x < -9.7) the exact gradient is below 1e-32 and is returned as
// 0, which also keeps e finite so e * s * s never forms inf * 0.
inline v8f gelu_grad8(v8f x) {
  const v8f x2 = x * x;
  const v8f z = (x + kKappa * (x2 * x)) * (-2.0f * kBeta);
  const v8i flat = z > 80.0f;
  const v8f e = vexp(flat ? v8f{} : z);
  const v8f s = 1.0f / (1.0f + e);
  const v8f d = s + (2.0f * kBeta) * x * (1.0f + (3.0f * kKappa) * x2) * (e * s * s);
  // e = 0 (x > 10.7): the second term is below 1e-40 but its polynomial may overflow.
  return flat ? v8f{} : (e == 0.0f ? s : d);
}

// SwiGLU backward for 8 lanes of gate g, up u and upstream dy:
//   d up = dy * silu(g), silu(g) = g / (1 + e) with e = exp(-g) exactly as the forward forms it;
//   d gate = dy * u * silu'(g), silu'(g) = s (1 + g (1 - s)), s = sigmoid(g) = 1 / (1 + e).
// 1 - s is formed as e * s (no cancellation for g > 0). Below g = -80 the exact silu' is under
// 1e-33 and is returned as 0; those are also the only lanes where e may be inf and e * s NaN.
// e = 0 (g above about 103) means s = 1 and silu' = 1, also for g = +inf where g * 0 is NaN.
inline void swiglu_grad8(v8f g, v8f u, v8f dy, v8f& dg, v8f& du) {
  const v8f e = vexp(-g);
  const v8f s = 1.0f / (1.0f + e);
  const v8f d = s * (1.0f + g * (e * s));
  const v8f silu_grad = g < -80.0f ? v8f{} : (e == 0.0f ? v8f{} + 1.0f : d);
  du = dy * (g / (1.0f + e));
  dg = dy * u * silu_grad;
}

// Scalar tails go through the same vector code on a padded copy so every element sees one formula.
template <class F>
inline void tail8(const float* x, const float* dy, float* out, std::size_t n, F f) {
  float xb[8] = {}, db[8] = {};
  std::memcpy(xb, x, n * sizeof(float));
  if (dy != nullptr) std::memcpy(db, dy, n * sizeof(float));
  float ob[8];
  store8(ob, f(load8(xb), load8(db)));
  std::memcpy(out, ob, n * sizeof(float));
}

}  // namespace

// x: [n] -> y: [n]; y may alias x.
void gelu_forward(const float* x, float* y, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) store8(y + i, gelu8(load8(x + i)));
  if (i < n) tail8(x + i, nullptr, y + i, n - i, [](v8f xv, v8f) { return gelu8(xv); });
}

// x: [n] -> y: [n] bf16, through a cache-resident fp32 chunk (the same bits as gelu_forward
// followed by the bf16 rounding of the GEMM operands).
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n) {
  constexpr std::size_t k_chunk = 1024;  // multiple of 8: every element meets the vector body
  alignas(64) float buf[k_chunk];
  for (std::size_t i = 0; i < n; i += k_chunk) {
    const std::size_t m = std::min(k_chunk, n - i);
    gelu_forward(x + i, buf, m);
    to_bf16(buf, y + i, m);
  }
}

// x, dy: [n] -> dx: [n] overwritten; dx may alias dy.
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) store8(dx + i, gelu_grad8(load8(x + i)) * load8(dy + i));
  if (i < n) {
    tail8(x + i, dy + i, dx + i, n - i, [](v8f xv, v8f dv) { return gelu_grad8(xv) * dv; });
  }
}

// y[i] = a[i] + b[i]; y may alias a or b.
void add_forward(const float* a, const float* b, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

// y[i] += x[i]
void accumulate(float* y, const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += x[i];
}

// y [n, c] += b [c] per row.
void bias_add(float* y, const float* b, int n, int c) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (int r = 0; r < n; ++r) accumulate(y + r * cc, b, cc);
}

// gu: [n, 2m] rows of [gate | up] -> y: [n, m], y = gate * sigmoid(gate) * up.
void swiglu_forward(const float* gu, float* y, int n, int m) {
  const std::size_t mm = static_cast<std::size_t>(m);
  for (int i = 0; i < n; ++i) {
    const float* g = gu + i * 2 * mm;
    const float* u = g + mm;
    float* yr = y + i * mm;
    std::size_t j = 0;
    for (; j + 8 <= mm; j += 8) {
      const v8f gv = load8(g + j);
      store8(yr + j, gv / (1.0f + vexp(-gv)) * load8(u + j));
    }
    if (j < mm) {
      tail8(g + j, u + j, yr + j, mm - j,
            [](v8f gv, v8f uv) { return gv / (1.0f + vexp(-gv)) * uv; });
    }
  }
}

// gu: [n, 2m] rows of [gate | up], dy: [n, m] -> dgu: [n, 2m] overwritten ([d gate | d up]).
// Every 8-lane group is loaded before its results are stored, so dgu may alias gu.
void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m) {
  const std::size_t mm = static_cast<std::size_t>(m);
  for (int i = 0; i < n; ++i) {
    const float* g = gu + i * 2 * mm;
    const float* u = g + mm;
    const float* dyr = dy + i * mm;
    float* dg = dgu + i * 2 * mm;
    float* du = dg + mm;
    std::size_t j = 0;
    v8f dgv, duv;
    for (; j + 8 <= mm; j += 8) {
      swiglu_grad8(load8(g + j), load8(u + j), load8(dyr + j), dgv, duv);
      store8(dg + j, dgv);
      store8(du + j, duv);
    }
    if (j < mm) {
      // Tail through the same vector code on zero-padded copies (as tail8, with three inputs).
      const std::size_t t = mm - j;
      float gb[8] = {}, ub[8] = {}, db[8] = {}, ob[8];
      std::memcpy(gb, g + j, t * sizeof(float));
      std::memcpy(ub, u + j, t * sizeof(float));
      std::memcpy(db, dyr + j, t * sizeof(float));
      swiglu_grad8(load8(gb), load8(ub), load8(db), dgv, duv);
      store8(ob, dgv);
      std::memcpy(dg + j, ob, t * sizeof(float));
      store8(ob, duv);
      std::memcpy(du + j, ob, t * sizeof(float));
    }
  }
}

}  // namespace zf::kernels::cpu
