// Norm family, CPU reference: LayerNorm and RMSNorm over the last dimension, fp32. LayerNorm has
// PyTorch semantics (biased variance, eps inside the square root) and is written in the centred
// form y = ((x - mean) * rstd) * gamma + beta rather than torch's x * rstd + (-mean * rstd): same
// cost, but no cancellation when |mean| >> std (with FMA contraction the torch form returns
// 1e-4-sized garbage for a constant row instead of beta).
// Invariants: one row at a time, so a row (3 KiB at c = 768) stays in L1 across the passes and
// main memory sees each input once and each output once. Reductions use 16 float lanes in GCC
// vector extensions (a plain float reduction loop does not vectorize without -ffast-math).
// Nothing here allocates.
#include <cmath>
#include <cstddef>
#include <cstring>

#include "kernels/norm.hpp"
#include "kernels/vec8.hpp"

namespace zf::kernels::cpu {
namespace {

using namespace vec8;

// Mean of x[0..c), summed relative to x[0] so a large common offset does not eat the float
// lanes' precision (x - x0 is exact when x is within a factor 2 of x0).
float row_mean(const float* x, std::size_t c) {
  const float x0 = x[0];
  v8f a0 = {}, a1 = {};
  std::size_t j = 0;
  for (; j + 16 <= c; j += 16) {
    a0 += load8(x + j) - x0;
    a1 += load8(x + j + 8) - x0;
  }
  float s = hsum(a0 + a1);
  for (; j < c; ++j) s += x[j] - x0;
  return x0 + s / static_cast<float>(c);
}

float row_centered_sumsq(const float* x, float mean, std::size_t c) {
  v8f a0 = {}, a1 = {};
  std::size_t j = 0;
  for (; j + 16 <= c; j += 16) {
    const v8f d0 = load8(x + j) - mean, d1 = load8(x + j + 8) - mean;
    a0 += d0 * d0;
    a1 += d1 * d1;
  }
  float s = hsum(a0 + a1);
  for (; j < c; ++j) s += (x[j] - mean) * (x[j] - mean);
  return s;
}

}  // namespace

// x: [n, c], gamma/beta: [c] -> y: [n, c]; mean, rstd: [n] (optional).
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps) {
  if (c <= 0) return;
  const std::size_t cc = static_cast<std::size_t>(c);
  for (int r = 0; r < n; ++r) {
    const float* xr = x + r * cc;
    float* yr = y + r * cc;
    const float mu = row_mean(xr, cc);
    const float var = row_centered_sumsq(xr, mu, cc) / static_cast<float>(c);
    const float rs = 1.0f / std::sqrt(var + eps);
    std::size_t j = 0;
    for (; j + 8 <= cc; j += 8) {
      store8(yr + j, ((load8(xr + j) - mu) * rs) * load8(gamma + j) + load8(beta + j));
    }
    for (; j < cc; ++j) yr[j] = ((xr[j] - mu) * rs) * gamma[j] + beta[j];
    if (mean != nullptr) mean[r] = mu;
    if (rstd != nullptr) rstd[r] = rs;
  }
}

// x, dy: [n, c]; gamma: [c]; mean, rstd: [n] from the forward. dx: [n, c] accumulated;
// dgamma, dbeta: [c] accumulated.
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c) {
  if (c <= 0) return;
  const std::size_t cc = static_cast<std::size_t>(c);
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int r = 0; r < n; ++r) {
    const float* xr = x + r * cc;
    const float* dyr = dy + r * cc;
    float* dxr = dx + r * cc;
    const float mu = mean[r], rs = rstd[r];
    // Pass 1: sg = sum(g), sgx = sum(g * xhat) with g = dy * gamma, xhat = (x - mean) * rstd;
    // the parameter gradients ride along.
    v8f sg8 = {}, sgx8 = {};
    std::size_t j = 0;
    for (; j + 8 <= cc; j += 8) {
      const v8f xh = (load8(xr + j) - mu) * rs, dyv = load8(dyr + j);
      const v8f g = dyv * load8(gamma + j);
      sg8 += g;
      sgx8 += g * xh;
      store8(dgamma + j, load8(dgamma + j) + dyv * xh);
      store8(dbeta + j, load8(dbeta + j) + dyv);
    }
    float sg = hsum(sg8), sgx = hsum(sgx8);
    for (; j < cc; ++j) {
      const float xh = (xr[j] - mu) * rs, g = dyr[j] * gamma[j];
      sg += g;
      sgx += g * xh;
      dgamma[j] += dyr[j] * xh;
      dbeta[j] += dyr[j];
    }
    // Pass 2: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)).
    const float mg = sg * inv_c, mgx = sgx * inv_c;
    j = 0;
    for (; j + 8 <= cc; j += 8) {
      const v8f xh = (load8(xr + j) - mu) * rs;
      const v8f g = load8(dyr + j) * load8(gamma + j);
      store8(dxr + j, load8(dxr + j) + rs * ((g - mg) - xh * mgx));
    }
    for (; j < cc; ++j) {
      const float xh = (xr[j] - mu) * rs;
      dxr[j] += rs * ((dyr[j] * gamma[j] - mg) - xh * mgx);
    }
  }
}

// x: [n, c], gamma: [c] -> y: [n, c]; rstd: [n] (optional). Sum of squares in 16 lanes, then
// one scaling pass.
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps) {
  if (c <= 0) return;
  const std::size_t cc = static_cast<std::size_t>(c);
  for (int i = 0; i < n; ++i) {
    const float* xr = x + i * cc;
    float* yr = y + i * cc;
    v8f a0 = {}, a1 = {};
    std::size_t j = 0;
    for (; j + 16 <= cc; j += 16) {
      const v8f u = load8(xr + j), w = load8(xr + j + 8);
      a0 += u * u;
      a1 += w * w;
    }
    float ss = hsum(a0 + a1);
    for (; j < cc; ++j) ss += xr[j] * xr[j];
    const float rs = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
    j = 0;
    for (; j + 8 <= cc; j += 8) store8(yr + j, load8(xr + j) * rs * load8(gamma + j));
    for (; j < cc; ++j) yr[j] = xr[j] * rs * gamma[j];
    if (rstd != nullptr) rstd[i] = rs;
  }
}

// x, dy: [n, c]; gamma: [c]; rstd: [n] from the forward. dx: [n, c] accumulated; dgamma: [c]
// accumulated. With r = rstd and xhat = x * r, y = xhat * gamma and dr/dx_k = -r^3 x_k / c, so
//   dx = r * (g - xhat * mean(g * xhat)),  g = dy * gamma,
// LayerNorm's formula without the mean(g) term (there is no mean to subtract). As there, the
// reduction runs over xhat (O(1) whatever the scale of x) in float lanes.
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c) {
  if (c <= 0) return;
  const std::size_t cc = static_cast<std::size_t>(c);
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int r = 0; r < n; ++r) {
    const float* xr = x + r * cc;
    const float* dyr = dy + r * cc;
    float* dxr = dx + r * cc;
    const float rs = rstd[r];
    // Pass 1: sgx = sum(g * xhat); dgamma rides along.
    v8f sgx8 = {};
    std::size_t j = 0;
    for (; j + 8 <= cc; j += 8) {
      const v8f xh = load8(xr + j) * rs, dyv = load8(dyr + j);
      sgx8 += dyv * load8(gamma + j) * xh;
      store8(dgamma + j, load8(dgamma + j) + dyv * xh);
    }
    float sgx = hsum(sgx8);
    for (; j < cc; ++j) {
      const float xh = xr[j] * rs;
      sgx += dyr[j] * gamma[j] * xh;
      dgamma[j] += dyr[j] * xh;
    }
    // Pass 2: dx += rstd * (g - xhat * mean(g * xhat)).
    const float mgx = sgx * inv_c;
    j = 0;
    for (; j + 8 <= cc; j += 8) {
      const v8f xh = load8(xr + j) * rs;
      const v8f g = load8(dyr + j) * load8(gamma + j);
      store8(dxr + j, load8(dxr + j) + rs * (g - xh * mgx));
    }
    for (; j < cc; ++j) dxr[j] += rs * (dyr[j] * gamma[j] - xr[j] * rs * mgx);
  }
}

}  // namespace zf::kernels::cpu
