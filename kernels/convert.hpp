#pragma once
// 16-bit float formats <-> fp32, on the host: the one place zeroflow converts bf16 (bfloat16:
// fp32's sign and 8-bit exponent, 7 mantissa bits) and f16 (IEEE binary16: 5-bit exponent, 10
// mantissa bits). Loaders (safetensors, runtime/core/dtype) and later mixed-precision cpu kernels
// use these. They are host helpers over host memory, so they are not dispatched by device.
// Invariants:
// - Widening is exact for every bit pattern (every bf16 and f16 value is an fp32 value);
//   NaN stays NaN with its sign.
// - Narrowing rounds to nearest, ties to even, as torch's .to(bfloat16 / float16) on CPU:
//   overflow gives inf, f16 results below 2^-14 become subnormals (or 0), NaN gives a quiet NaN
//   of the same sign (never inf).
// - The bulk forms read and write through memcpy-sized loads: src/dst need no alignment (mmapped
//   safetensors data is only byte-aligned).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace zf::kernels {

inline float bf16_to_f32(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

inline std::uint16_t f32_to_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // NaN: force the quiet bit
  }
  // Round to nearest even on the 16 dropped bits; a carry out of the mantissa bumps the exponent
  // (up to inf for values at or above the largest bf16 plus half an ulp).
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<std::uint32_t>(mag) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline std::uint16_t f32_to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) {  // NaN: quiet, top payload bits kept
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x1ffu));
  }
  if (a >= 0x477ff000u) {  // >= 65520 (max + half an ulp) and inf: inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (a >= 0x38800000u) {  // >= 2^-14: normal; rebias 127 -> 15
    const std::uint32_t r = a - 0x38000000u;
    return static_cast<std::uint16_t>(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
  }
  // Below 2^-14: the f16 subnormal m * 2^-24 with m = round(|f| * 2^24) (m = 1024 is 2^-14, the
  // smallest normal, whose bits are exactly 0x400). |f| < 2^-25 rounds to 0.
  const std::uint32_t e = a >> 23;
  if (e < 102) return sign;
  const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;  // |f| = mant * 2^(e - 150)
  const std::uint32_t shift = 126 - e;                     // 14 .. 24
  const std::uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  std::uint32_t m = mant >> shift;
  if (rem > half || (rem == half && (m & 1u))) ++m;
  return static_cast<std::uint16_t>(sign | m);
}

// Bulk forms: src holds n 16-bit values (or n floats), dst receives n floats (or n 16-bit values).
inline void bf16_to_f32(const void* src, float* dst, std::size_t n) {
  const auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t b;
    std::memcpy(&b, s + 2 * i, 2);
    dst[i] = bf16_to_f32(b);
  }
}
inline void f16_to_f32(const void* src, float* dst, std::size_t n) {
  const auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t h;
    std::memcpy(&h, s + 2 * i, 2);
    dst[i] = f16_to_f32(h);
  }
}
inline void f32_to_bf16(const float* src, void* dst, std::size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t b = f32_to_bf16(src[i]);
    std::memcpy(d + 2 * i, &b, 2);
  }
}
inline void f32_to_f16(const float* src, void* dst, std::size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t h = f32_to_f16(src[i]);
    std::memcpy(d + 2 * i, &h, 2);
  }
}

}  // namespace zf::kernels
