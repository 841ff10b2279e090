// ggml family (kernels/ggml_quant.hpp): hand-made blocks decode to the values the formats define
// (by the reference decoder and through the fast kernel with one-hot activations); the encoders
// follow ggml's reference quantizers (known encodings, error bounds, every code by ggml's rule,
// re-encoding is the identity); the fast kernel (AVX-512 and the portable loop) equals the
// double reference within the stated fp32 bound over a shape sweep with bias, accumulation and
// strides; a row's outputs are the same bits in any batch, output split and thread split; bad
// shapes are refused.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/threads.hpp"

using namespace zf::kernels;
using sz = std::size_t;
using u8 = std::uint8_t;

namespace {

constexpr ggml_format k_all[] = {ggml_format::f32,  ggml_format::f16,  ggml_format::bf16,
                                 ggml_format::q8_0, ggml_format::q4_0, ggml_format::q4_K,
                                 ggml_format::q6_K};

// q8_0 / q4_0 multiply 8-bit activations (ggml_quant.hpp, "q8 activations").
bool x8_format(ggml_format f) {
  return f == ggml_format::q8_0 || f == ggml_format::q4_0;
}

std::vector<float> normal(sz n, unsigned seed, float sd = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct simd_scope {  // the portable loop (or the AVX-512 path) for a scope
  bool prev = ggml_simd();
  explicit simd_scope(bool on) { set_ggml_simd(on); }
  ~simd_scope() { set_ggml_simd(prev); }
};

void put16(u8* p, std::uint16_t h) {
  std::memcpy(p, &h, 2);
}
std::uint16_t get16(const u8* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// A quantized [n, k] matrix of normal weights (one block per row all zero when n > 2, so the
// d == 0 case is in every sweep).
std::vector<u8> make_matrix(ggml_format f, int n, int k, unsigned seed) {
  auto w = normal(sz(n) * k, seed);
  if (n > 2)
    for (int j = 0; j < std::min(k, 32); ++j) w[sz(2) * k + j] = 0.0f;
  std::vector<u8> q(row_bytes(f, k) * n);
  ggml_quantize_rows(f, w.data(), 0, n, k, q.data());
  return q;
}

std::vector<float> dequantized(const ggml_matrix& w) {
  std::vector<float> d(sz(w.n) * w.k);
  const sz rb = row_bytes(w.fmt, w.k);
  for (int o = 0; o < w.n; ++o)
    ggml_dequantize_row(w.fmt, static_cast<const u8*>(w.data) + sz(o) * rb, w.k,
                        d.data() + sz(o) * w.k);
  return d;
}

}  // namespace

TEST_CASE("ggml: the format table, row bytes and refused shapes") {
  CHECK(row_bytes(ggml_format::q8_0, 64) == 68);
  CHECK(row_bytes(ggml_format::q4_0, 768) == 24 * 18);
  CHECK(row_bytes(ggml_format::f16, 7) == 14);
  CHECK(row_bytes(ggml_format::bf16, 32) == 64);
  CHECK(row_bytes(ggml_format::f32, 3) == 12);
  CHECK(ggml_info(ggml_format::q4_0).ggml_type == 2);
  CHECK(ggml_info(ggml_format::q8_0).ggml_type == 8);
  CHECK(ggml_info(ggml_format::bf16).ggml_type == 30);
  CHECK(ggml_info(ggml_format::q4_K).ggml_type == 12);
  CHECK(ggml_info(ggml_format::q6_K).ggml_type == 14);
  CHECK(row_bytes(ggml_format::q4_K, 768) == 3 * 144);
  CHECK(row_bytes(ggml_format::q6_K, 256) == 210);
  for (ggml_format f : k_all) {
    ggml_format g = ggml_format::f32;
    CHECK(parse_ggml_format(ggml_info(f).name, g));
    CHECK(g == f);
  }
  ggml_format g;
  CHECK_FALSE(parse_ggml_format("q4_1", g));
  // block formats: k must be a multiple of the block (32, K formats 256), everywhere
  for (ggml_format f :
       {ggml_format::q8_0, ggml_format::q4_0, ggml_format::q4_K, ggml_format::q6_K}) {
    for (int k : {0, 16, 33, 48, 100, ggml_block_size(f) == 256 ? 224 : 0}) {  // 224 = 7 x 32
      CAPTURE(k);
      CHECK_THROWS_AS(row_bytes(f, k), std::invalid_argument);
      std::vector<float> x(128, 1.0f), y(8);
      std::vector<u8> buf(1024);
      CHECK_THROWS_AS(ggml_quantize_row(f, x.data(), k, buf.data()), std::invalid_argument);
      CHECK_THROWS_AS(ggml_dequantize_row(f, buf.data(), k, y.data()), std::invalid_argument);
      const ggml_matrix w{f, 2, k, buf.data()};
      CHECK_THROWS_AS(ggml_gemm(w, {x.data(), 0, 1, nullptr, y.data(), 0, false}),
                      std::invalid_argument);
      CHECK_THROWS_AS(cpu::ggml_gemm_reference(w, {x.data(), 0, 1, nullptr, y.data(), 0, false}),
                      std::invalid_argument);
    }
  }
  CHECK_THROWS_AS(row_bytes(ggml_format::f16, 0), std::invalid_argument);
  std::vector<float> x(64), y(4);
  std::vector<u8> buf(1024);
  CHECK_THROWS_AS(ggml_gemm({ggml_format::f32, 0, 32, buf.data()},
                            {x.data(), 0, 1, nullptr, y.data(), 0, false}),
                  std::invalid_argument);
  CHECK_THROWS_AS(ggml_gemm({ggml_format::f32, 2, 32, buf.data()},
                            {x.data(), 16, 1, nullptr, y.data(), 0, false}),
                  std::invalid_argument);  // ldx < k
}

TEST_CASE("ggml: hand-made blocks decode to the values the formats define") {
  // q8_0: d = 0.5 (fp16 0x3800), qs = 8j - 128 (-128 included); then d = 2^-24 (subnormal)
  std::vector<u8> q8(68);
  put16(q8.data(), 0x3800);
  for (int j = 0; j < 32; ++j)
    q8[sz(2 + j)] = static_cast<u8>(static_cast<std::int8_t>(8 * j - 128));
  put16(q8.data() + 34, 0x0001);
  for (int j = 0; j < 32; ++j) q8[sz(36 + j)] = static_cast<u8>(static_cast<std::int8_t>(j - 16));
  std::vector<float> want8(64);
  for (int j = 0; j < 32; ++j) {
    want8[sz(j)] = 0.5f * float(8 * j - 128);
    want8[sz(32 + j)] = std::ldexp(float(j - 16), -24);
  }
  // q4_0: d = -0.25 (fp16 0xB400), byte j = j | (15 - j) << 4: x[j] = d (j - 8),
  // x[j + 16] = d (7 - j); then d = 65504 (0x7BFF) with every byte 0x8F: x[j] = 7 d, x[j+16] = 0
  std::vector<u8> q4(36);
  put16(q4.data(), 0xB400);
  for (int j = 0; j < 16; ++j) q4[sz(2 + j)] = static_cast<u8>(j | (15 - j) << 4);
  put16(q4.data() + 18, 0x7BFF);
  for (int j = 0; j < 16; ++j) q4[sz(20 + j)] = 0x8F;
  std::vector<float> want4(64);
  for (int j = 0; j < 16; ++j) {
    want4[sz(j)] = -0.25f * float(j - 8);
    want4[sz(j + 16)] = -0.25f * float(7 - j);
    want4[sz(32 + j)] = 7.0f * 65504.0f;
    want4[sz(48 + j)] = 0.0f;
  }
  // f16 / bf16 / f32 rows of known bit patterns (k = 64 by repetition)
  const std::uint16_t h16[] = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3555, 0x8400, 0x0000, 0xB800};
  const float v16[] = {1.0f, -2.0f, 0x1p-24f, 65504.0f, 0x1.554p-2f, -0x1p-14f, 0.0f, -0.5f};
  const std::uint16_t hb[] = {0x3F80, 0xC040, 0x0001, 0x7F7F, 0x3EAB, 0x8080, 0x0000, 0xBF00};
  const float vb[] = {1.0f, -3.0f, 0x1p-133f, 0x1.FEp127f, 0x1.56p-2f, -0x1p-126f, 0.0f, -0.5f};
  std::vector<u8> f16(128), b16(128), f32(256);
  std::vector<float> want16(64), wantb(64), want32(64);
  for (int j = 0; j < 64; ++j) {
    put16(f16.data() + 2 * j, h16[j % 8]);
    put16(b16.data() + 2 * j, hb[j % 8]);
    want16[sz(j)] = v16[j % 8];
    wantb[sz(j)] = vb[j % 8];
    want32[sz(j)] = float(j) * 0.375f - 3.0f;
  }
  std::memcpy(f32.data(), want32.data(), 256);

  struct item {
    ggml_format f;
    const std::vector<u8>& data;
    const std::vector<float>& want;
  };
  const item items[] = {{ggml_format::q8_0, q8, want8},
                        {ggml_format::q4_0, q4, want4},
                        {ggml_format::f16, f16, want16},
                        {ggml_format::bf16, b16, wantb},
                        {ggml_format::f32, f32, want32}};
  for (const item& it : items) {
    CAPTURE(ggml_info(it.f).name);
    std::vector<float> got(64);
    ggml_dequantize_row(it.f, it.data.data(), 64, got.data());
    for (int j = 0; j < 64; ++j) {
      CAPTURE(j);
      CHECK(got[sz(j)] == it.want[sz(j)]);
    }
    // The fast kernel with one-hot rows of x reads each value exactly: the same matrix seen as
    // 2 rows of 32 (q formats) picks w[o][j] for x = e_j.
    const ggml_matrix w{it.f, 2, 32, it.data.data()};
    for (bool simd : {true, false}) {
      simd_scope s(simd);
      CAPTURE(simd);
      std::vector<float> x(sz(32) * 32, 0.0f), y(sz(32) * 2);
      for (int j = 0; j < 32; ++j) x[sz(j) * 32 + j] = 1.0f;
      cpu::ggml_gemm_direct(w, {x.data(), 0, 32, nullptr, y.data(), 0, false}, 0, 2);
      for (int j = 0; j < 32; ++j)
        for (int o = 0; o < 2; ++o) {
          CAPTURE(j);
          CAPTURE(o);
          CHECK(y[sz(j) * 2 + o] == it.want[sz(o) * 32 + j]);
        }
    }
  }
}

TEST_CASE("ggml: the encoders follow ggml's reference quantizers") {
  // Known encodings. q4_0 of x[j] = j - 16: max = -16, d = 2, q = (int)(x / 2 + 8.5) =
  // (j + 1) / 2, clamped to 15.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[sz(j)] = float(j - 16);
  std::vector<u8> b(34);
  ggml_quantize_row(ggml_format::q4_0, x.data(), 32, b.data());
  CHECK(get16(b.data()) == 0x4000);
  for (int j = 0; j < 16; ++j) {
    CAPTURE(j);
    CHECK(b[sz(2 + j)] == ((j + 1) / 2 | std::min(15, (j + 17) / 2) << 4));
  }
  // q8_0 with absmax 127 (d = 1): the codes are roundf of x, halves away from zero.
  for (int j = 0; j < 32; ++j) x[sz(j)] = float(4 * j - 64);
  x[1] = 2.5f;
  x[2] = -0.5f;
  x[3] = 0.49f;
  x[31] = -127.0f;
  ggml_quantize_row(ggml_format::q8_0, x.data(), 32, b.data());
  CHECK(get16(b.data()) == 0x3C00);
  for (int j = 0; j < 32; ++j) {
    CAPTURE(j);
    CHECK(static_cast<std::int8_t>(b[sz(2 + j)]) == static_cast<int>(std::roundf(x[sz(j)])));
  }
  CHECK(static_cast<std::int8_t>(b[3]) == 3);
  CHECK(static_cast<std::int8_t>(b[4]) == -1);
  CHECK(static_cast<std::int8_t>(b[5]) == 0);

  // Random rows (an all-zero block, a block with one huge value, a sign-flipped max).
  const int k = 32 * 64;
  auto w = normal(sz(k), 21, 0.05f);
  for (int j = 0; j < 32; ++j) w[sz(j)] = 0.0f;
  w[40] = 30.0f;
  w[70] = -5.0f;
  std::vector<u8> q8(row_bytes(ggml_format::q8_0, k)), q4(row_bytes(ggml_format::q4_0, k));
  ggml_quantize_row(ggml_format::q8_0, w.data(), k, q8.data());
  ggml_quantize_row(ggml_format::q4_0, w.data(), k, q4.data());
  std::vector<float> d8(static_cast<sz>(k)), d4(static_cast<sz>(k));
  ggml_dequantize_row(ggml_format::q8_0, q8.data(), k, d8.data());
  ggml_dequantize_row(ggml_format::q4_0, q4.data(), k, d4.data());
  for (int bi = 0; bi < k / 32; ++bi) {
    CAPTURE(bi);
    const float* xb = w.data() + sz(bi) * 32;
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    // q8_0: d = absmax / 127 as fp16; |x - x'| <= d / 2 plus the fp16 rounding of d (times
    // |q| <= 127); the largest magnitude gets +-127.
    const float d8f = amax / 127.0f, d8h = f16_to_f32(get16(q8.data() + sz(bi) * 34));
    CHECK(get16(q8.data() + sz(bi) * 34) == f32_to_f16(d8f));
    const double slack8 = 127.0 * std::fabs(double(d8f) - d8h) + 1e-7 * amax;
    for (int j = 0; j < 32; ++j) {
      CAPTURE(j);
      CHECK(std::fabs(double(xb[j]) - d8[sz(bi) * 32 + j]) <= d8f / 2 + slack8);
      if (std::fabs(xb[j]) == amax && amax > 0)
        CHECK(std::abs(static_cast<std::int8_t>(q8[sz(bi) * 34 + 2 + j])) == 127);
    }
    // q4_0: d = max / -8 as fp16; every code is min(15, trunc(x / d + 8.5)) (ggml's id = 1 / d);
    // the max element gets code 0, so it is decoded as -8 d = max up to d's fp16 rounding.
    const float d4f = max / -8.0f, id = d4f != 0 ? 1.0f / d4f : 0.0f;
    const float d4h = f16_to_f32(get16(q4.data() + sz(bi) * 18));
    CHECK(get16(q4.data() + sz(bi) * 18) == f32_to_f16(d4f));
    for (int j = 0; j < 32; ++j) {
      CAPTURE(j);
      const u8 byte = q4[sz(bi) * 18 + 2 + sz(j % 16)];
      const int code = j < 16 ? byte & 0xF : byte >> 4;
      CHECK(code == std::min(15, static_cast<int>(xb[j] * id + 8.5f)));
      if (xb[j] == max && amax > 0) CHECK(code == 0);
      // half a step, a whole one where the code was clamped to 15 (x / d in [7.5, 8])
      const double step = std::fabs(d4f) * (code == 15 ? 1.0 : 0.5);
      CHECK(std::fabs(double(xb[j]) - d4[sz(bi) * 32 + j]) <=
            step + 8.0 * std::fabs(double(d4f) - d4h) + 1e-7 * amax);
    }
  }
  // Re-encoding the decoded values gives the same bytes (the grid is a fixed point).
  std::vector<u8> r8(q8.size()), r4(q4.size());
  ggml_quantize_row(ggml_format::q8_0, d8.data(), k, r8.data());
  ggml_quantize_row(ggml_format::q4_0, d4.data(), k, r4.data());
  CHECK(r8 == q8);
  CHECK(r4 == q4);
  // f16 / bf16: round to nearest even, as kernels/convert.hpp
  std::vector<u8> h(sz(k) * 2);
  ggml_quantize_row(ggml_format::f16, w.data(), k, h.data());
  for (int j = 0; j < k; j += 97) CHECK(get16(h.data() + 2 * j) == f32_to_f16(w[sz(j)]));
  ggml_quantize_row(ggml_format::bf16, w.data(), k, h.data());
  for (int j = 0; j < k; j += 97) CHECK(get16(h.data() + 2 * j) == f32_to_bf16(w[sz(j)]));
}

TEST_CASE("ggml: the fast kernel equals the double reference within the fp32 bound") {
  MESSAGE("ggml q8-activation kernel AVX-512 VNNI: " << std::string(ggml_x8_simd() ? "yes" : "no"));
  MESSAGE("ggml AVX-512 kernel: " << std::string(ggml_simd() ? "yes" : "no (portable loop only)"));
  for (bool simd : {true, false}) {
    simd_scope s(simd);
    for (ggml_format f : k_all) {
      const bool q = x8_format(f);
      std::vector<int> ks = {32, 64, 96, 768, 3072};  // 96: an odd number of blocks
      if (ggml_block_size(f) == 1) ks.insert(ks.end(), {1, 7, 33, 100});  // masked tails
      if (ggml_block_size(f) == 256) ks = {256, 768, 3072};
      for (int k : ks)
        for (int n : {1, 7, 768, 2304})
          for (int m : {1, 2, 5, 16}) {
            if (!simd && sz(k) * n * m > sz(1) << 24) continue;  // the portable loop is slower
            CAPTURE(ggml_info(f).name);
            CAPTURE(simd);
            CAPTURE(k);
            CAPTURE(n);
            CAPTURE(m);
            const auto data = make_matrix(f, n, k, unsigned(k + n + int(f)));
            const ggml_matrix w{f, n, k, data.data()};
            const auto wd = dequantized(w);
            const int ldx = m > 1 ? k + 3 : 0, ldy = m > 1 ? n + 5 : 0;
            const int lx = ldx ? ldx : k, ly = ldy ? ldy : n;
            const auto x = normal(sz(m) * lx, 7 + m);
            const auto bias = normal(sz(n), 9);
            const auto y0 = normal(sz(m) * ly, 11);
            const bool use_bias = (k + m) % 2 == 0, acc = (n + m) % 3 != 0;
            const qgemm_io io0{x.data(), ldx, m,  use_bias ? bias.data() : nullptr,
                               nullptr,  ldy, acc};
            std::vector<float> got = y0, ref = y0;
            qgemm_io io = io0;
            io.y = got.data();
            ggml_gemm(w, io);
            io.y = ref.data();
            // q8_0 / q4_0 multiply quantized activations (ggml_quant.hpp, "q8 activations"):
            // their spec is the q8-activation reference, and |w x| is over the quantized x
            if (q)
              cpu::ggml_x8_reference(w, io);
            else
              cpu::ggml_gemm_reference(w, io);
            std::vector<float> xs = x;  // x as the kernel sees it
            if (q) {
              ggml_x8_buffer xb;
              xb.quantize(x.data(), ldx, m, k);
              for (int i = 0; i < m; ++i)
                for (int j = 0; j < k; ++j)
                  xs[sz(i) * lx + j] = float(xb.q[sz(i) * k + j]) * xb.d[sz(i) * (k / 32) + j / 32];
            }
            int bad = 0;
            for (int i = 0; i < m; ++i) {
              for (int o = 0; o < n; ++o) {
                const double r = ref[sz(i) * ly + o], diff = std::fabs(got[sz(i) * ly + o] - r);
                double extra = 0, dot = r;
                if (use_bias) {
                  extra += 0x1p-23 * (std::fabs(bias[sz(o)]) + std::fabs(r));
                  dot -= bias[sz(o)];
                }
                if (acc) {
                  extra += 0x1p-23 * (std::fabs(y0[sz(i) * ly + o]) + std::fabs(r));
                  dot -= y0[sz(i) * ly + o];
                }
                const double g = (k / 16.0 + 8.0) * 0x1p-24;
                // sum |w x| >= |the dot product|: the full sum only where the cheap bound fails
                if (diff <= g * std::fabs(dot) + extra) continue;
                double mag = 0;
                for (int j = 0; j < k; ++j)
                  mag += std::fabs(double(wd[sz(o) * k + j]) * xs[sz(i) * lx + j]);
                const double tol = g * mag + extra;
                if (diff > tol && bad++ < 3) {
                  CAPTURE(i);
                  CAPTURE(o);
                  CHECK(got[sz(i) * ly + o] == doctest::Approx(r));
                  CHECK(std::fabs(got[sz(i) * ly + o] - r) <= tol);
                }
              }
              // columns past n in each output row are left alone
              for (int o = n; o < ly; ++o) CHECK(got[sz(i) * ly + o] == y0[sz(i) * ly + o]);
            }
            CHECK(bad == 0);
          }
    }
  }
}

TEST_CASE("ggml: a row's outputs are the same bits in any batch, output split and thread split") {
  const int k = 768, n = 300;
  const auto x = normal(sz(16) * k, 31);
  for (bool simd : {true, false}) {
    simd_scope s(simd);
    for (ggml_format f : k_all) {
      CAPTURE(ggml_info(f).name);
      CAPTURE(simd);
      const auto data = make_matrix(f, n, k, 33 + unsigned(f));
      const ggml_matrix w{f, n, k, data.data()};
      std::vector<float> all16(sz(16) * n), five(sz(5) * n), one(static_cast<sz>(n));
      cpu::ggml_gemm_direct(w, {x.data(), 0, 16, nullptr, all16.data(), 0, false}, 0, n);
      cpu::ggml_gemm_direct(w, {x.data(), 0, 5, nullptr, five.data(), 0, false}, 0, n);
      cpu::ggml_gemm_direct(w, {x.data(), 0, 1, nullptr, one.data(), 0, false}, 0, n);
      for (int o = 0; o < n; ++o) {  // row 0 of m = 5 and m = 16 is the m = 1 call's
        CHECK(std::memcmp(&five[sz(o)], &one[sz(o)], 4) == 0);
        CHECK(std::memcmp(&all16[sz(o)], &one[sz(o)], 4) == 0);
      }
      for (int i = 0; i < 16; ++i) {  // every row alone
        std::vector<float> alone(static_cast<sz>(n));
        cpu::ggml_gemm_direct(w, {x.data() + sz(i) * k, 0, 1, nullptr, alone.data(), 0, false}, 0,
                              n);
        CHECK(std::memcmp(alone.data(), all16.data() + sz(i) * n, sz(n) * 4) == 0);
      }
      std::vector<float> pieces(sz(5) * n);  // outputs in uneven pieces
      const qgemm_io io{x.data(), 0, 5, nullptr, pieces.data(), 0, false};
      for (int o0 = 0; o0 < n;) {
        const int o1 = std::min(n, o0 + 1 + o0 % 11);
        cpu::ggml_gemm_direct(w, io, o0, o1);
        o0 = o1;
      }
      CHECK(pieces == five);
    }
  }
  // Threads: the family's helper threads (num_threads 2, also with two callers at once: one of
  // them runs alone) and a lent pool of three give the single call's bits.
  const int prev = num_threads();
  for (ggml_format f : {ggml_format::q4_0, ggml_format::q8_0, ggml_format::f16}) {
    CAPTURE(ggml_info(f).name);
    const int nn = 1000;
    const auto data = make_matrix(f, nn, k, 41);
    const ggml_matrix w{f, nn, k, data.data()};
    std::vector<float> alone(sz(3) * nn), omp(alone.size()), pooled(alone.size());
    cpu::ggml_gemm_direct(w, {x.data(), 0, 3, nullptr, alone.data(), 0, false}, 0, nn);
    set_num_threads(2);
    ggml_gemm(w, {x.data(), 0, 3, nullptr, omp.data(), 0, false});
    CHECK(omp == alone);
    std::vector<float> c1(alone.size()), c2(alone.size());
    for (int rep = 0; rep < 20; ++rep) {
      std::thread other([&] { ggml_gemm(w, {x.data(), 0, 3, nullptr, c2.data(), 0, false}); });
      ggml_gemm(w, {x.data(), 0, 3, nullptr, c1.data(), 0, false});
      other.join();
      CHECK(c1 == alone);
      CHECK(c2 == alone);
    }
    set_num_threads(prev);
    int calls = 0;
    const kernel_pool pool = zf::test::thread_per_piece_pool(3, &calls);
    {
      kernel_pool_scope lend(&pool);
      ggml_gemm(w, {x.data(), 0, 3, nullptr, pooled.data(), 0, false});
    }
    CHECK(calls > 1);
    CHECK(pooled == alone);
  }
}

TEST_CASE(
    "ggml: prefill rows run one bf16 GEMM near the reference, invariant mode the direct bits") {
  const int k = 768, n = 200, m = 40;
  const auto x = normal(sz(m) * k, 51);
  const auto bias = normal(sz(n), 52);
  for (ggml_format f : k_all) {
    CAPTURE(ggml_info(f).name);
    const auto data = make_matrix(f, n, k, 53 + unsigned(f));
    const ggml_matrix w{f, n, k, data.data()};
    std::vector<float> got(sz(m) * n, 1.0f), ref(sz(m) * n, 1.0f), direct(sz(m) * n, 1.0f);
    ggml_gemm(w, {x.data(), 0, m, bias.data(), got.data(), 0, true});
    cpu::ggml_gemm_reference(w, {x.data(), 0, m, bias.data(), ref.data(), 0, true});
    const auto wd = dequantized(w);
    double worst = 0, exact_rows = 0;
    for (int i = 0; i < m; ++i)
      for (int o = 0; o < n; ++o) {
        double mag = 0;  // bf16 rounding of x and w: 2^-8 relative per product, summed
        for (int j = 0; j < k; ++j)
          mag += std::abs(double(wd[sz(o) * k + sz(j)]) * x[sz(i) * k + sz(j)]);
        const double e = std::abs(double(got[sz(i) * n + sz(o)]) - ref[sz(i) * n + sz(o)]);
        worst = std::max(worst, e / (mag + 1e-30));
        exact_rows += e == 0;
      }
    MESSAGE(std::string(ggml_info(f).name) << ": prefill error / sum |w x| at most " << worst);
    CHECK(worst < (f == ggml_format::f32 ? 1e-5 : 4e-3));        // bf16 x and w: 2^-8 per product
    if (f != ggml_format::f32) CHECK(exact_rows < 0.5 * m * n);  // really the bf16 GEMM
    // batch-invariant mode: the direct kernel's bits, row by row
    batch_invariant_scope inv(true);
    ggml_gemm(w, {x.data(), 0, m, bias.data(), direct.data(), 0, true});
    std::vector<float> one(sz(n), 1.0f);
    ggml_gemm(w, {x.data() + sz(m - 1) * k, 0, 1, bias.data(), one.data(), 0, true});
    CHECK(std::memcmp(one.data(), direct.data() + sz(m - 1) * n, sz(n) * 4) == 0);
  }
}
