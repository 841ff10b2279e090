#pragma once
// ggml family, CPU internals shared by ggml_quant_cpu.cpp (the float-activation kernels) and
// ggml_x8_cpu.cpp (the q8-activation kernels of q8_0 / q4_0): the AVX-512 target, the CPU
// check, unaligned 16-bit loads, the output store and the fixed 16-lane reduction. Not a public
// header (kernels/ggml_quant.hpp is).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/quant.hpp"  // qgemm_io

#define ZF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

namespace zf::kernels::ggml_detail {

inline bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
}

inline std::uint16_t load_u16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// y[i, o] from the dot product d: + bias, then into y or onto it.
inline void put(const qgemm_io& io, int ldy, int i, int o, float d) {
  if (io.bias) d += io.bias[o];
  float& y = io.y[std::size_t(i) * ldy + o];
  y = io.accumulate ? y + d : d;
}

// The 16 lanes summed in a fixed order (halves, then quarters, ...).
ZF_AVX512 inline float hsum16(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

}  // namespace zf::kernels::ggml_detail
