#pragma once
// 8-lane float helpers shared by the element-wise CPU kernels (GCC/Clang vector extensions,
// AVX where the target has it): loads/stores, NaN-propagating min/max and a vectorised exp.
// Private to kernels/: no caller outside this folder includes it.
#include <cstdint>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace zf::kernels::vec8 {

using v8f = float __attribute__((vector_size(32)));
using v8i = int __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// 8 bf16 values (raw bits) widened to fp32, exactly: the bits moved to the top half.
inline v8f load8(const std::uint16_t* p) {
  using v8u = unsigned __attribute__((vector_size(32)));
  using v8h = unsigned short __attribute__((vector_size(16)));
  v8h h;
  std::memcpy(&h, p, sizeof h);
  return (v8f)(__builtin_convertvector(h, v8u) << 16);
}
inline float hsum(v8f v) {  // fixed pairwise order: the same bits on every call
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
inline void store8(float* p, v8f v) {
  std::memcpy(p, &v, sizeof v);
}

// Lane-wise a > b ? a : b and a < b ? a : b, returning b where either is NaN (maxps/minps),
// so clamping as vmax(lo, x) keeps a NaN x.
inline v8f vmax(v8f a, v8f b) {
#if defined(__AVX__)
  return (v8f)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}
inline v8f vmin(v8f a, v8f b) {
#if defined(__AVX__)
  return (v8f)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return a < b ? a : b;
#endif
}

// exp(x) for 8 lanes, within 1 ulp: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7
// polynomial (Cephes expf), times 2^n built from exponent bits in two halves so that n = 128
// and subnormal results need no special case. The clamp to [-104, ln(FLT_MAX)] makes the tails
// exact without blends: exp(-104) and below round to 0 (so exp(-inf) = 0), the top of the range
// overflows to +inf, NaN stays NaN.
inline v8f vexp(v8f x) {
  x = vmin(v8f{} + 88.7228394f, vmax(v8f{} - 104.0f, x));
  const v8f t = x * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: rounds x log2 e
  const v8f n = t - 12582912.0f;
  const v8i ni = (v8i)t - 0x4B400000;
  v8f r = x - n * 0.693359375f;  // Cody-Waite split of ln 2
  r = r - n * -2.12194440e-4f;
  v8f p = v8f{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const v8i n1 = ni >> 1, n2 = ni - n1;
  const v8f s1 = (v8f)((n1 + 127) << 23), s2 = (v8f)((n2 + 127) << 23);
  return p * s1 * s2;
}

}  // namespace zf::kernels::vec8
