// ggml's K formats (kernels/ggml_quant.hpp, q4_K / q6_K): hand-made super-blocks, packed here
// from ggml-common.h's layout, decode to the values the formats define, by the reference decoder
// and through the fast kernel (one-hot activations read each value); the plain encoders stay
// within their step size. The shape sweep, batch invariance and prefill of these formats run
// with the others in test_ggml_quant.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/ggml_quant.hpp"

using namespace zf::kernels;
using sz = std::size_t;
using u8 = std::uint8_t;

namespace {

void put16(u8* p, std::uint16_t h) {
  std::memcpy(p, &h, 2);
}

// q4_K: d = 0.5 (fp16 0x3800), dmin = 0.25 (0x3400), sub-block j's scale j + 1 + 50 (j >= 4: the
// 6-bit values use their high bits) and min 2 j + 1 + 40, code (l + 3 j) % 16.
std::vector<u8> q4k_block(std::vector<float>& want) {
  std::vector<u8> b(144, 0);
  put16(b.data(), 0x3800);
  put16(b.data() + 2, 0x3400);
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = j + 1 + (j >= 4 ? 50 : 0);
    m[j] = 2 * j + 1 + (j >= 4 ? 40 : 0);
  }
  u8* s = b.data() + 4;  // 0..3: scales 0..3 | scale 4..7 bits 4-5; 4..7 mins alike; 8..11 lows
  for (int j = 0; j < 4; ++j) {
    s[j] = u8(sc[j] | (sc[j + 4] >> 4) << 6);
    s[j + 4] = u8(m[j] | (m[j + 4] >> 4) << 6);
    s[j + 8] = u8((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
  }
  want.assign(256, 0.0f);
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l) {
      const int c = (l + 3 * j) % 16;
      u8& q = b[sz(16 + 32 * (j / 2) + l)];
      q = u8(j % 2 ? q | c << 4 : c);
      want[sz(32 * j + l)] = float(0.5 * (sc[j]) * c - 0.25 * m[j]);  // exact in float
    }
  return b;
}

// q6_K: d = 0.125 (0x3000), the scale of elements 16 s .. 16 s + 15 is s - 8 (negative ones
// too), element e's 6-bit code (7 e + 5) % 64.
std::vector<u8> q6k_block(std::vector<float>& want) {
  std::vector<u8> b(210, 0);
  put16(b.data() + 208, 0x3000);
  for (int s = 0; s < 16; ++s) b[sz(192 + s)] = u8(std::int8_t(s - 8));
  want.assign(256, 0.0f);
  for (int e = 0; e < 256; ++e) {
    const int c = (7 * e + 5) % 64, h = e / 128, t = (e % 128) / 32, l = e % 32;
    u8& lo = b[sz(64 * h + l + 32 * (t & 1))];
    lo = u8(lo | (c & 15) << (t < 2 ? 0 : 4));
    b[sz(128 + 32 * h + l)] |= u8((c >> 4) << (2 * t));
    want[sz(e)] = float(0.125 * (e / 16 - 8) * (c - 32));  // exact in float
  }
  return b;
}

}  // namespace

TEST_CASE("ggml K formats: hand-made super-blocks decode to the values the formats define") {
  std::vector<float> want4, want6;
  const auto b4 = q4k_block(want4), b6 = q6k_block(want6);
  struct item {
    ggml_format f;
    const std::vector<u8>& data;
    const std::vector<float>& want;
  };
  for (const item& it : {item{ggml_format::q4_K, b4, want4}, item{ggml_format::q6_K, b6, want6}}) {
    CAPTURE(ggml_info(it.f).name);
    std::vector<float> got(256);
    ggml_dequantize_row(it.f, it.data.data(), 256, got.data());
    int bad = 0;
    for (int j = 0; j < 256; ++j) bad += got[sz(j)] != it.want[sz(j)];
    CHECK(bad == 0);
    // the fast kernel (AVX-512 and the portable loop) with x = e_j reads w[j] exactly
    const ggml_matrix w{it.f, 1, 256, it.data.data()};
    for (bool simd : {true, false}) {
      const bool prev = ggml_simd();
      set_ggml_simd(simd);
      CAPTURE(simd);
      std::vector<float> x(sz(256) * 256, 0.0f), y(256);
      for (int j = 0; j < 256; ++j) x[sz(j) * 256 + j] = 1.0f;
      for (int r0 = 0; r0 < 256; r0 += 16)
        cpu::ggml_gemm_direct(w, {x.data() + sz(r0) * 256, 0, 16, nullptr, y.data() + r0, 1, false},
                              0, 1);
      int wrong = 0;
      for (int j = 0; j < 256; ++j) wrong += y[sz(j)] != it.want[sz(j)];
      CHECK(wrong == 0);
      set_ggml_simd(prev);
    }
  }
}

TEST_CASE("ggml K formats: the plain encoders stay within a step of the input") {
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(768);
  for (auto& v : x) v = nd(g);
  for (int j = 0; j < 32; ++j) x[sz(256 + j)] = 0.0f;  // a zero sub-block
  for (ggml_format f : {ggml_format::q4_K, ggml_format::q6_K}) {
    CAPTURE(ggml_info(f).name);
    std::vector<u8> q(row_bytes(f, 768));
    std::vector<float> y(768);
    ggml_quantize_row(f, x.data(), 768, q.data());
    ggml_dequantize_row(f, q.data(), 768, y.data());
    double err = 0, mag = 0;
    for (sz i = 0; i < x.size(); ++i) {
      err = std::max(err, double(std::abs(y[i] - x[i])));
      mag = std::max(mag, double(std::abs(x[i])));
    }
    // q4_K: 15 steps over a sub-block's range (~2 max |x|), plus the 6-bit scale rounding;
    // q6_K: 31 steps over max |x|
    MESSAGE(std::string(ggml_info(f).name) << ": largest error " << err << " of " << mag);
    CHECK(err <= (f == ggml_format::q4_K ? 0.2 : 0.06) * mag);
    CHECK(err > 0);
  }
}
