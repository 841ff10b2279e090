// bf16 / f16 <-> fp32 (kernels/convert.hpp) against an independent formulation: the nearest
// representable value found by comparing distances in double (ties to the even bit pattern),
// over every 16-bit pattern, every midpoint between neighbouring 16-bit values, and a stride
// through all 2^32 float patterns.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/convert.hpp"

using namespace zf::kernels;

namespace {

// f16 value of bits 0..0x7C00 in double, with inf standing in as 65536 (the next "step" after
// the largest finite 65504, so that rounding at the top overflows as IEEE says).
double f16_value(std::uint32_t h) {
  if (h >= 0x7C00) return 65536.0;
  const int exp = static_cast<int>(h >> 10), mant = static_cast<int>(h & 0x3ff);
  return exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
}

// bf16 value of bits 0..0x7F80 in double, inf as 2^128.
double bf16_value(std::uint32_t b) {
  if (b >= 0x7F80) return std::ldexp(1.0, 128);
  return static_cast<double>(std::bit_cast<float>(b << 16));
}

// Nearest of the non-negative patterns [0, top] under value(), ties to the even pattern.
template <class Value>
std::uint16_t nearest(double x, std::uint32_t top, Value value) {
  std::uint32_t lo = 0, hi = top;  // largest pattern with value <= x
  while (lo < hi) {
    const std::uint32_t mid = (lo + hi + 1) / 2;
    if (value(mid) <= x) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  if (lo == top) return static_cast<std::uint16_t>(top);
  const double dl = x - value(lo), dh = value(lo + 1) - x;
  if (dl < dh || (dl == dh && lo % 2 == 0)) return static_cast<std::uint16_t>(lo);
  return static_cast<std::uint16_t>(lo + 1);
}

std::uint16_t ref_f32_to_f16(float f) {
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  return sign | nearest(std::abs(static_cast<double>(f)), 0x7C00, f16_value);
}

std::uint16_t ref_f32_to_bf16(float f) {
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  return sign | nearest(std::abs(static_cast<double>(f)), 0x7F80, bf16_value);
}

}  // namespace

TEST_CASE("convert: f16 -> f32 is exact for every bit pattern") {
  int bad = 0;
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const float f = f16_to_f32(static_cast<std::uint16_t>(i));
    const bool neg = i >> 15;
    const std::uint32_t a = i & 0x7fff;
    if (a > 0x7C00) {
      bad += !std::isnan(f) || std::signbit(f) != neg;
    } else {
      const double want = (neg ? -1 : 1) * (a == 0x7C00 ? INFINITY : f16_value(a));
      bad += static_cast<double>(f) != want || std::signbit(f) != neg;
      bad += f32_to_f16(f) != i;  // and back, bit for bit (-0 included)
    }
  }
  CHECK(bad == 0);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.f, -24));     // smallest subnormal
  CHECK(f16_to_f32(0x03FF) == std::ldexp(1023.f, -24));  // largest subnormal
  CHECK(f16_to_f32(0x0400) == std::ldexp(1.f, -14));     // smallest normal
  CHECK(f16_to_f32(0x7BFF) == 65504.f);
}

TEST_CASE("convert: f32 -> f16 rounds to nearest even, overflows to inf, keeps NaN") {
  int bad = 0;
  // Every midpoint between neighbouring non-negative f16 values (representable in f32), and the
  // floats one ulp either side of it.
  for (std::uint32_t h = 0; h < 0x7C00; ++h) {
    const float mid = static_cast<float>((f16_value(h) + f16_value(h + 1)) / 2);
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), -mid}) {
      bad += f32_to_f16(x) != ref_f32_to_f16(x);
    }
    bad += f32_to_f16(mid) != (h % 2 == 0 ? h : h + 1);
  }
  // A stride through all float patterns (finite ones; NaN below).
  for (std::uint64_t u = 0; u < (1ull << 32); u += 7919) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(u));
    if (!std::isnan(x)) bad += f32_to_f16(x) != ref_f32_to_f16(x);
  }
  CHECK(bad == 0);
  CHECK(f32_to_f16(65519.99f) == 0x7BFF);
  CHECK(f32_to_f16(65520.0f) == 0x7C00);  // the tie above the largest finite goes to inf
  CHECK(f32_to_f16(1e10f) == 0x7C00);
  CHECK(f32_to_f16(-INFINITY) == 0xFC00);
  CHECK(f32_to_f16(std::ldexp(1.f, -25)) == 0x0000);  // half the smallest subnormal: tie to 0
  CHECK(f32_to_f16(std::nextafter(std::ldexp(1.f, -25), 1.f)) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(3.f, -25)) == 0x0002);   // 1.5 x 2^-24: tie to even 2
  CHECK(f32_to_f16(std::ldexp(1.f, -149)) == 0x0000);  // f32 subnormal
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  for (std::uint32_t nan_bits : {0x7F800001u, 0x7FC00000u, 0xFF800001u, 0x7FBFFFFFu}) {
    const std::uint16_t h = f32_to_f16(std::bit_cast<float>(nan_bits));
    CHECK(std::isnan(f16_to_f32(h)));
    CHECK((h & 0x0200) != 0);  // quiet
    CHECK(((h & 0x8000) != 0) == ((nan_bits >> 31) != 0));
  }
}

TEST_CASE("convert: f32 -> bf16 rounds to nearest even, overflows to inf, keeps NaN") {
  int bad = 0;
  for (std::uint32_t b = 0; b < 0x7F80; ++b) {  // every bf16 round-trips; midpoints tie to even
    bad += f32_to_bf16(bf16_to_f32(static_cast<std::uint16_t>(b))) != b;
    const float mid = std::bit_cast<float>((b << 16) | 0x8000u);
    bad += f32_to_bf16(mid) != (b % 2 == 0 ? b : b + 1);
    bad += f32_to_bf16(mid) != ref_f32_to_bf16(mid);
    bad += f32_to_bf16(-mid) != ref_f32_to_bf16(-mid);
  }
  for (std::uint64_t u = 0; u < (1ull << 32); u += 7919) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(u));
    if (!std::isnan(x)) bad += f32_to_bf16(x) != ref_f32_to_bf16(x);
  }
  CHECK(bad == 0);
  CHECK(f32_to_bf16(1.0f) == 0x3F80);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3F808000u)) == 0x3F80);  // tie: down to even
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3F818000u)) == 0x3F82);  // tie: up to even
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3F808001u)) == 0x3F81);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)) == 0x7F80);  // FLT_MAX rounds to inf
  CHECK(f32_to_bf16(std::bit_cast<float>(0x7F7F7FFFu)) == 0x7F7F);
  CHECK(f32_to_bf16(-INFINITY) == 0xFF80);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x00008000u)) == 0x0000);  // subnormal tie to even
  CHECK(f32_to_bf16(std::bit_cast<float>(0x00018000u)) == 0x0002);
  for (std::uint32_t nan_bits : {0x7F800001u, 0x7FC00000u, 0xFFFFFFFFu, 0x7F80FFFFu}) {
    const std::uint16_t b = f32_to_bf16(std::bit_cast<float>(nan_bits));
    CHECK(std::isnan(bf16_to_f32(b)));  // never rounded into inf
    CHECK(((b & 0x8000) != 0) == ((nan_bits >> 31) != 0));
  }
}

TEST_CASE("convert: bulk forms read and write unaligned memory") {
  const std::vector<float> x = {1.0f, -3.0f, 3.140625f, 65504.0f, std::ldexp(1.f, -24)};
  const std::size_t n = x.size();
  std::vector<unsigned char> buf(2 * n + 1);
  std::vector<float> back(n);
  f32_to_f16(x.data(), buf.data() + 1, n);
  f16_to_f32(buf.data() + 1, back.data(), n);
  CHECK(back == x);
  f32_to_bf16(x.data(), buf.data() + 1, 3);
  bf16_to_f32(buf.data() + 1, back.data(), 3);
  CHECK(std::equal(back.begin(), back.begin() + 3, x.begin()));
}
