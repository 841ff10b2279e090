// Quant family (kernels/quant.hpp): every float format's bit patterns against the format's
// definition (specials, subnormals, the largest values), encoding to
// nearest-even at every midpoint and overflow as specified, the integer grids, the packed
// layouts' round trips and bit positions, round-to-nearest quantization's error bounds and
// refusals, qgemm and w8a8 against double GEMMs, and per-token against per-tensor int8
// activations when a few tokens carry outlier channels.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/dispatch.hpp"
#include "kernels/quant.hpp"

using namespace zf::kernels;

namespace {

const qformat k_float_formats[] = {qformat::fp8_e4m3, qformat::fp8_e5m2, qformat::fp6_e3m2,
                                   qformat::fp4_e2m1};
const qformat k_all_formats[] = {qformat::int8,     qformat::int4,     qformat::fp8_e4m3,
                                 qformat::fp8_e5m2, qformat::fp6_e3m2, qformat::fp4_e2m1};

unsigned n_codes(qformat f) {
  return 1u << qinfo(f).bits;
}
unsigned sign_of(qformat f) {
  return 1u << (qinfo(f).bits - 1);
}

bool is_special(qformat f, unsigned code) {
  const unsigned mag = code & (sign_of(f) - 1);
  if (f == qformat::fp8_e4m3) return mag == 0x7f;
  if (f == qformat::fp8_e5m2) return mag >= 0x7c;
  return false;
}

std::vector<float> normal(std::size_t n, unsigned seed, float sd = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// y [m, n] = x [m, k] @ w [k, n] in double.
std::vector<double> gemm_ref(const float* x, const float* w, int m, int k, int n) {
  std::vector<double> y(std::size_t(m) * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < k; ++j)
      for (int o = 0; o < n; ++o)
        y[std::size_t(i) * n + o] += double(x[std::size_t(i) * k + j]) * w[std::size_t(j) * n + o];
  return y;
}

double rel_err(const float* got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

// A quantized matrix with its buffers.
struct qbuf {
  std::vector<std::uint8_t> data, zeros;
  std::vector<float> scales;
  qmatrix q;
  qbuf(qformat f, const std::vector<float>& w, int k, int n, int group, bool asym = false,
       bool pow2 = false)
      : data(packed_row_bytes(f, k) * n),
        zeros(asym ? std::size_t(n) * (k / group) : 0),
        scales(std::size_t(n) * (k / group)) {
    quantize_rtn(f, w.data(), std::size_t(n), 1, k, n, group, asym, pow2, data.data(),
                 scales.data(), asym ? zeros.data() : nullptr);
    q = {f, n, k, group, data.data(), scales.data(), asym ? zeros.data() : nullptr};
  }
};

}  // namespace

TEST_CASE("quant: every float-format bit pattern decodes as the format specifies") {
  struct expect {
    qformat f;
    float max, min_subnormal, min_normal;
    unsigned finite_positive;  // codes 0 .. with finite non-negative values
  };
  const expect cases[] = {{qformat::fp8_e4m3, 448.0f, 0x1p-9f, 0x1p-6f, 127},
                          {qformat::fp8_e5m2, 57344.0f, 0x1p-16f, 0x1p-14f, 124},
                          {qformat::fp6_e3m2, 28.0f, 0x1p-4f, 0x1p-2f, 32},
                          {qformat::fp4_e2m1, 6.0f, 0.5f, 1.0f, 8}};
  for (const expect& e : cases) {
    const std::string name = qinfo(e.f).name;
    CAPTURE(name);
    const unsigned S = sign_of(e.f);
    CHECK(qinfo(e.f).max == e.max);
    CHECK(fp_decode(e.f, 1) == e.min_subnormal);
    CHECK(fp_decode(e.f, 1u << qinfo(e.f).mbits) == e.min_normal);
    float prev = -1;
    unsigned finite = 0;
    for (unsigned c = 0; c < S; ++c) {
      const float v = fp_decode(e.f, c), nv = fp_decode(e.f, c | S);
      if (is_special(e.f, c)) {
        CHECK((std::isnan(v) || std::isinf(v)));
        continue;
      }
      ++finite;
      CHECK(v > prev);  // increasing with the code: the format is sign-magnitude
      prev = v;
      CHECK(std::bit_cast<std::uint32_t>(nv) == (std::bit_cast<std::uint32_t>(v) | 0x80000000u));
    }
    CHECK(finite == e.finite_positive);
    CHECK(prev == e.max);
  }
  // the specials: e4m3 has only S.1111.111 NaN; e5m2 IEEE inf and NaN
  CHECK(std::isnan(fp_decode(qformat::fp8_e4m3, 0x7f)));
  CHECK(std::isnan(fp_decode(qformat::fp8_e4m3, 0xff)));
  CHECK(fp_decode(qformat::fp8_e4m3, 0x7e) == 448.0f);
  CHECK(fp_decode(qformat::fp8_e5m2, 0x7c) == INFINITY);
  CHECK(fp_decode(qformat::fp8_e5m2, 0xfc) == -INFINITY);
  CHECK(std::isnan(fp_decode(qformat::fp8_e5m2, 0x7d)));
  // e2m1's whole positive grid
  const float e2m1[] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (unsigned c = 0; c < 8; ++c) CHECK(fp_decode(qformat::fp4_e2m1, c) == e2m1[c]);
  CHECK(fp_decode(qformat::fp6_e3m2, 0x1f) == 28.0f);
  CHECK(fp_decode(qformat::fp6_e3m2, 0x3f) == -28.0f);
}

TEST_CASE("quant: float formats encode to nearest even, and overflow as specified") {
  for (qformat f : k_float_formats) {
    const std::string name = qinfo(f).name;
    CAPTURE(name);
    const unsigned S = sign_of(f);
    for (unsigned c = 0; c < n_codes(f); ++c) {  // finite codes round-trip, -0 included
      if (is_special(f, c)) continue;
      CHECK(fp_encode(f, fp_decode(f, c), false) == c);
    }
    for (unsigned c = 0; c + 1 < S; ++c) {  // midpoints between neighbouring positive codes
      if (is_special(f, c) || is_special(f, c + 1)) continue;
      const double lo = fp_decode(f, c), hi = fp_decode(f, c + 1), mid = (lo + hi) / 2;
      CAPTURE(lo);
      CHECK(fp_encode(f, float(mid)) == ((c % 2 == 0) ? c : c + 1));  // ties to the even code
      CHECK(fp_encode(f, std::nextafter(float(mid), 0.0f)) == c);
      CHECK(fp_encode(f, std::nextafter(float(mid), INFINITY)) == c + 1);
      CHECK(fp_encode(f, -float(mid)) == (((c % 2 == 0) ? c : c + 1) | S));
    }
    const unsigned maxc = fp_encode(f, qinfo(f).max);
    CHECK(fp_encode(f, 1e30f) == maxc);  // saturating (the quantizers' mode)
    CHECK(fp_encode(f, -INFINITY) == (maxc | S));
    CHECK(fp_encode(f, 1e-30f) == 0);
    CHECK(fp_encode(f, -1e-30f) == S);
  }
  // non-saturating: e4m3 past max + half an ulp is NaN; e5m2 overflows to inf
  CHECK(fp_encode(qformat::fp8_e4m3, 464.0f, false) == 0x7e);  // the tie goes to 448 (even)
  CHECK(fp_encode(qformat::fp8_e4m3, 465.0f, false) == 0x7f);
  CHECK(fp_encode(qformat::fp8_e4m3, NAN, false) == 0x7f);
  CHECK(fp_encode(qformat::fp8_e5m2, 61440.0f, false) == 0x7c);  // tie above max: inf
  CHECK(fp_encode(qformat::fp8_e5m2, 61439.0f, false) == 0x7b);
  CHECK(fp_encode(qformat::fp8_e5m2, -INFINITY, false) == 0xfc);
  CHECK(std::isnan(fp_decode(qformat::fp8_e5m2, fp_encode(qformat::fp8_e5m2, NAN, false))));
  CHECK(fp_encode(qformat::fp6_e3m2, NAN) == 0);  // no NaN in the format
  // hand-worked: 0.3 = 1.2 * 2^-2 -> mantissa 1.2 * 8 = 9.6 -> 10/8 = 1.25: S.0101.010
  CHECK(fp_encode(qformat::fp8_e4m3, 0.3f) == 0x2a);
  CHECK(fp_decode(qformat::fp8_e4m3, 0x2a) == 0.3125f);
}

TEST_CASE("quant: integer grids round to nearest even and clamp") {
  CHECK(quantize_value(qformat::int8, 2.5f, 1.0f, 0, false) == 2);  // tie to even
  CHECK(quantize_value(qformat::int8, 3.5f, 1.0f, 0, false) == 4);
  CHECK(quantize_value(qformat::int8, -300.0f, 1.0f, 0, false) == std::uint8_t(-127));
  CHECK(dequantize_value(qformat::int8, 0x81, 0.5f, 0, false) == -63.5f);  // -127 * 0.5
  CHECK(quantize_value(qformat::int4, -9.0f, 1.0f, 0, false) == 0x8);      // -8
  CHECK(dequantize_value(qformat::int4, 0x8, 2.0f, 0, false) == -16.0f);
  CHECK(dequantize_value(qformat::int4, 0x7, 2.0f, 0, false) == 14.0f);
  CHECK(quantize_value(qformat::int4, -3.0f, 1.0f, 5, true) == 2);  // asym: -3 + 5
  CHECK(quantize_value(qformat::int4, 40.0f, 1.0f, 5, true) == 15);
  CHECK(dequantize_value(qformat::int4, 2, 1.0f, 5, true) == -3.0f);
  for (int v = -127; v <= 127; ++v)
    CHECK(dequantize_value(qformat::int8,
                           quantize_value(qformat::int8, float(v) * 0.25f, 0.25f, 0, false), 0.25f,
                           0, false) == float(v) * 0.25f);
  float s = 0;
  int z = 0;
  const float g[] = {-1.5f, 0.25f, 3.0f};
  group_scale(qformat::int4, g, 3, true, false, s, z);
  CHECK(s == doctest::Approx(4.5 / 15));
  CHECK(z == 5);  // round(1.5 / 0.3)
  group_scale(qformat::fp4_e2m1, g, 3, false, true, s, z);
  CHECK(s == 0.5f);  // 3 / 6 = 0.5, already a power of two
  const float h[] = {3.5f};
  group_scale(qformat::fp4_e2m1, h, 1, false, true, s, z);
  CHECK(s == 1.0f);  // 3.5 / 6 rounded up to 2^0
  const float zero[] = {0, 0};
  group_scale(qformat::int8, zero, 2, false, false, s, z);
  CHECK(s == 1.0f);
}

TEST_CASE("quant: packed rows round-trip every code and put the bits where documented") {
  std::mt19937 g(5);
  for (qformat f : k_all_formats) {
    const std::string name = qinfo(f).name;
    CAPTURE(name);
    const int k = 96;
    std::vector<std::uint8_t> codes(k), back(k), packed(packed_row_bytes(f, k));
    for (auto& c : codes) c = static_cast<std::uint8_t>(g() % n_codes(f));
    pack_row(f, codes.data(), k, packed.data());
    unpack_row(f, packed.data(), k, back.data());
    CHECK(back == codes);
    CHECK(packed.size() == std::size_t(k) * qinfo(f).bits / 8);
  }
  std::vector<std::uint8_t> codes(32), packed(24);
  for (int j = 0; j < 32; ++j) codes[j] = static_cast<std::uint8_t>(j % 16);
  pack_row(qformat::int4, codes.data(), 32, packed.data());
  CHECK(packed[3] == (3 | 3 << 4));  // byte j: element j low, element j + 16 high
  for (int j = 0; j < 32; ++j) codes[j] = static_cast<std::uint8_t>(j == 5 ? 0x35 : 0);
  pack_row(qformat::fp6_e3m2, codes.data(), 32, packed.data());
  CHECK(packed[5] == 0x05);       // low 4 bits of element 5
  CHECK(packed[16 + 1] == 0x0c);  // high bits 0b11 of element 5 at bits 10..11 of the u64
}

TEST_CASE("quant: round-to-nearest quantization stays within half a step, exact on the grid") {
  const int k = 128, n = 24;
  const auto w = normal(std::size_t(k) * n, 11, 0.05f);
  for (qformat f : k_all_formats)
    for (int group : {32, 128}) {
      for (bool asym : {false, true}) {
        if (asym && f != qformat::int4) continue;
        const std::string name = qinfo(f).name;
        CAPTURE(name);
        CAPTURE(group);
        CAPTURE(asym);
        qbuf b(f, w, k, n, group, asym);
        std::vector<float> dq(w.size());
        dequantize(b.q, dq.data());
        const qformat_info& I = qinfo(f);
        for (int j = 0; j < k; ++j)
          for (int o = 0; o < n; ++o) {
            const std::size_t i = std::size_t(j) * n + o;
            const float s = b.scales[std::size_t(o) * (k / group) + j / group];
            // integers: half a step; floats: half an ulp of the value (or of the smallest
            // normal), relative to the scale
            const double bound = I.is_float ? std::max(std::abs(double(w[i])),
                                                       double(s) * std::ldexp(1.0, 1 - I.bias)) *
                                                  std::ldexp(1.0, -I.mbits - 1)
                                            : 0.5 * s;
            CHECK(std::abs(double(dq[i]) - w[i]) <= bound * (1 + 1e-5));
          }
        // quantizing the dequantized matrix again changes nothing: it is on the grid
        qbuf again(f, dq, k, n, group, asym);
        CHECK(again.data == b.data);
      }
    }
}

TEST_CASE("quant: bad shapes and options are refused with the reason") {
  const auto w = normal(64 * 8, 1);
  std::vector<std::uint8_t> data(64 * 8), zeros(64);
  std::vector<float> scales(64);
  auto msg = [&](qformat f, int k, int group, bool asym) {
    try {
      quantize_rtn(f, w.data(), 8, 1, k, 8, group, asym, false, data.data(), scales.data(),
                   zeros.data());
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(msg(qformat::int8, 48, 48, false).find("not a multiple of 32") != std::string::npos);
  CHECK(msg(qformat::int4, 64, 48, false).find("group size 48") != std::string::npos);
  CHECK(msg(qformat::int4, 64, 128, false).find("divides the input dimension 64") !=
        std::string::npos);
  CHECK(msg(qformat::int8, 64, 32, true).find("int4 only") != std::string::npos);
  CHECK(msg(qformat::int4, 64, 32, true) == "accepted");
  qformat f{};
  CHECK(parse_qformat("fp6_e3m2", f));
  CHECK(f == qformat::fp6_e3m2);
  CHECK_FALSE(parse_qformat("int3", f));
}

TEST_CASE("quant: an [out, in] weight (the LM head) quantizes as its transpose does") {
  const int k = 64, n = 24;
  const auto w = normal(std::size_t(k) * n, 31, 0.1f);  // [k, n]
  std::vector<float> wt(w.size());                      // [n, k]
  for (int j = 0; j < k; ++j)
    for (int o = 0; o < n; ++o) wt[std::size_t(o) * k + j] = w[std::size_t(j) * n + o];
  const qbuf a(qformat::int4, w, k, n, 32, true);
  std::vector<std::uint8_t> data(a.data.size()), zeros(a.zeros.size());
  std::vector<float> scales(a.scales.size());
  quantize_rtn(qformat::int4, wt.data(), 1, std::size_t(k), k, n, 32, true, false, data.data(),
               scales.data(), zeros.data());
  CHECK(data == a.data);
  CHECK(scales == a.scales);
  CHECK(zeros == a.zeros);
}

TEST_CASE("quant: qgemm equals the float GEMM of the dequantized weights, bias included") {
  const int k = 96, n = 40;
  const auto w = normal(std::size_t(k) * n, 2, 0.1f);
  const auto bias = normal(n, 3);
  for (qformat f : k_all_formats)
    for (int m : {1, 5}) {
      const std::string name = qinfo(f).name;
      CAPTURE(name);
      CAPTURE(m);
      qbuf b(f, w, k, n, 32, f == qformat::int4);
      std::vector<float> dq(w.size());
      dequantize(b.q, dq.data());
      const auto x = normal(std::size_t(m) * k, 4);
      auto want = gemm_ref(x.data(), dq.data(), m, k, n);
      for (int i = 0; i < m; ++i)
        for (int o = 0; o < n; ++o) want[std::size_t(i) * n + o] += bias[o];
      std::vector<float> y(std::size_t(m) * n);
      cpu::qgemm_reference(b.q, {x.data(), 0, m, bias.data(), y.data(), 0, false});
      CHECK(rel_err(y.data(), want) < 1e-6);
    }
}

namespace {
// A kernel pool of plain threads, one per piece: the dispatch splits outputs over it.
kernel_pool thread_pool() {
  kernel_pool p;
  p.threads = 3;
  p.run = [](int n, const std::function<void(int)>& fn) {
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i) ts.emplace_back(fn, i);
    for (auto& t : ts) t.join();
  };
  return p;
}
}  // namespace

// The decode kernel (direct), the prefill path (tiles through sgemm) and the dispatch (also
// split over threads), with the AVX-512 bodies and the portable ones, against the reference;
// strided operands and the residual (accumulate) epilogue; row dequantization bit for bit.
TEST_CASE("quant: the fast paths equal the reference for every format and shape") {
  const bool simd = quant_simd();
  if (!simd) MESSAGE("SKIP the AVX-512 bodies: this CPU lacks AVX-512 F/BW/VL/DQ");
  const int k = 256, n = 48, ldx = k + 8, ldy = n + 3;
  const auto w = normal(std::size_t(k) * n, 21, 0.1f);
  const auto bias = normal(n, 22);
  const auto x = normal(std::size_t(20) * ldx, 23);
  const auto y0 = normal(std::size_t(20) * ldy, 24);
  const kernel_pool pool = thread_pool();
  for (bool use_simd : {true, false}) {
    if (use_simd && !simd) continue;
    set_quant_simd(use_simd);
    for (qformat f : k_all_formats)
      for (int group : {32, 128, k})
        for (bool asym : {false, true}) {
          if (asym && f != qformat::int4) continue;
          CAPTURE(use_simd);
          const std::string name = qinfo(f).name;
          CAPTURE(name);
          CAPTURE(group);
          CAPTURE(asym);
          qbuf b(f, w, k, n, group, asym);
          std::vector<float> dq(w.size()), rows(w.size());
          dequantize(b.q, dq.data());
          cpu::dequantize_rows(b.q, 5, n, rows.data() + 5 * std::size_t(k));
          bool same = true;
          for (int o = 5; o < n; ++o)
            for (int j = 0; j < k; ++j)
              same = same && rows[std::size_t(o) * k + j] == dq[std::size_t(j) * n + o];
          CHECK(same);
          for (int m : {1, 3, 4, 7, 20})
            for (bool acc : {false, true}) {
              CAPTURE(m);
              CAPTURE(acc);
              auto run = [&](auto&& fn) {
                std::vector<float> y(y0.begin(), y0.begin() + std::size_t(m) * ldy);
                fn(qgemm_io{x.data(), ldx, m, bias.data(), y.data(), ldy, acc});
                return y;
              };
              const auto want = run([&](const qgemm_io& io) { cpu::qgemm_reference(b.q, io); });
              const std::vector<double> wd(want.begin(), want.end());
              const auto direct =
                  run([&](const qgemm_io& io) { cpu::qgemm_direct(b.q, io, 0, n); });
              CHECK(rel_err(direct.data(), wd) < 1e-6);
              CHECK(rel_err(run([&](const qgemm_io& io) { cpu::qgemm(b.q, io); }).data(), wd) <
                    1e-6);
              CHECK(rel_err(run([&](const qgemm_io& io) { qgemm(b.q, io); }).data(), wd) < 1e-6);
              // batch-invariant: row i alone, outputs in two ranges, and the dispatch split over
              // threads give the same bits
              const int i = m - 1;
              const auto one = run([&](qgemm_io io) {
                io.x += std::size_t(i) * ldx;
                io.y += std::size_t(i) * ldy;
                io.m = 1;
                cpu::qgemm_direct(b.q, io, 0, n);
              });
              CHECK(std::memcmp(one.data() + std::size_t(i) * ldy,
                                direct.data() + std::size_t(i) * ldy, n * 4) == 0);
              CHECK(direct == run([&](const qgemm_io& io) {
                      cpu::qgemm_direct(b.q, io, 0, 17);
                      cpu::qgemm_direct(b.q, io, 17, n);
                    }));
              if (m <= 8) {
                const kernel_pool_scope lend(&pool);
                CHECK(direct == run([&](const qgemm_io& io) { qgemm(b.q, io); }));
              }
            }
        }
  }
  set_quant_simd(true);
}

TEST_CASE("quant: w8a8 sums in int32 and scales per token and group") {
  const int k = 128, n = 40, ldx = k + 4;
  const auto w = normal(std::size_t(k) * n, 7, 0.1f);
  const auto x = normal(std::size_t(20) * ldx, 8);
  const auto bias = normal(n, 9);
  qbuf b(qformat::int8, w, k, n, 64);
  std::vector<float> dq(w.size());
  dequantize(b.q, dq.data());
  const kernel_pool pool = thread_pool();
  for (bool use_simd : {true, false}) {
    if (use_simd && !quant_simd()) continue;
    set_quant_simd(use_simd);
    for (int m : {1, 6, 20}) {
      CAPTURE(use_simd);
      CAPTURE(m);
      std::vector<std::int8_t> xq(std::size_t(m) * k);
      std::vector<float> xs(m), dx(std::size_t(m) * k), xd(std::size_t(m) * k);
      quantize_activations(x.data(), ldx, m, k, false, xq.data(), xs.data());
      for (std::size_t i = 0; i < xq.size(); ++i) {
        dx[i] = float(xq[i]) * xs[i / k];
        xd[i] = x[i / k * ldx + i % k];
      }
      auto want = gemm_ref(dx.data(), dq.data(), m, k, n);
      for (int i = 0; i < m; ++i)
        for (int o = 0; o < n; ++o) want[std::size_t(i) * n + o] += bias[o];
      auto run = [&](auto&& fn) {
        std::vector<float> y(std::size_t(m) * n);
        fn(qgemm_io{x.data(), ldx, m, bias.data(), y.data(), 0, false});
        return y;
      };
      const auto ref =
          run([&](const qgemm_io& io) { cpu::qgemm_w8a8(b.q, xq.data(), xs.data(), io); });
      CHECK(rel_err(ref.data(), want) < 1e-6);
      const auto direct = run(
          [&](const qgemm_io& io) { cpu::qgemm_w8a8_direct(b.q, xq.data(), xs.data(), io, 0, n); });
      CHECK(rel_err(direct.data(), want) < 1e-6);
      CHECK(rel_err(run([&](const qgemm_io& io) { qgemm_w8a8(b.q, io); }).data(), want) < 1e-6);
      if (m <= 8) {  // the dispatch's decode path over threads: the direct kernel's bits
        const kernel_pool_scope lend(&pool);
        CHECK(direct == run([&](const qgemm_io& io) { qgemm_w8a8(b.q, io); }));
      }
      // against float weights and activations: int8's error, small
      CHECK(rel_err(ref.data(), [&] {
              auto f = gemm_ref(xd.data(), w.data(), m, k, n);
              for (int i = 0; i < m; ++i)
                for (int o = 0; o < n; ++o) f[std::size_t(i) * n + o] += bias[o];
              return f;
            }()) < 0.02);
    }
  }
  set_quant_simd(true);
  std::vector<float> tiny(k, 0.0f), xs(1), y(n);
  std::vector<std::int8_t> xq(k);
  quantize_activations(tiny.data(), 0, 1, k, false, xq.data(), xs.data());
  CHECK(xs[0] == 1.0f);
  qbuf f8(qformat::fp8_e4m3, w, k, n, 64);
  CHECK_THROWS_AS(qgemm_w8a8(f8.q, {tiny.data(), 0, 1, nullptr, y.data(), 0, false}),
                  std::invalid_argument);
}

// Large models carry a few huge activation channels on a few tokens ("massive activations",
// e.g. on the first token). One scale for the whole tensor then spends int8's range on them and
// rounds every other token coarsely; a scale per token confines the loss to those tokens.
TEST_CASE("quant: per-token int8 activations keep outlier channels' damage small") {
  const int k = 256, n = 64, m = 64;
  const auto w = normal(std::size_t(k) * n, 9, 0.05f);
  auto x = normal(std::size_t(m) * k, 10);
  for (int c : {3, 77, 200}) x[std::size_t(c)] = 60.0f;  // on the first token
  qbuf b(qformat::int8, w, k, n, k);
  const auto want = gemm_ref(x.data(), w.data(), m, k, n);
  auto err = [&](bool per_tensor) {
    std::vector<std::int8_t> xq(x.size());
    std::vector<float> xs(m), y(std::size_t(m) * n);
    quantize_activations(x.data(), 0, m, k, per_tensor, xq.data(), xs.data());
    cpu::qgemm_w8a8(b.q, xq.data(), xs.data(), {x.data(), 0, m, nullptr, y.data(), 0, false});
    return rel_err(y.data(), want);
  };
  const double tok = err(false), ten = err(true);
  MESSAGE("output rel err, per-token " << tok << ", per-tensor " << ten);
  CHECK(tok < 0.025);
  CHECK(ten > 4 * tok);
}

// The W8A8 prefill GEMM (cpu::qgemm_w8a8_gemm, VNNI tiles of 8 token rows x 48 outputs) against
// the reference cpu::qgemm_w8a8 on the same codes: m not a multiple of the tile, n not a multiple
// of 16 or 48, k = 768 and 3072, group 128 and per channel, ragged ldx / ldy, bias, accumulate.
// The int32 group sums are exact in both; only the float rounding of the scales may differ:
// |gemm - reference| <= 1e-5 * (xs * sum_g |s_g * dot_g| + |bias| + |y0|) per element.
TEST_CASE("quant: the w8a8 prefill GEMM equals the reference over tiles, groups and strides") {
  const bool vnni = quant_vnni(), amx = quant_amx();
  if (!vnni) MESSAGE("SKIP the VNNI body: this CPU lacks AVX-512 VNNI");
  if (!amx) MESSAGE("SKIP the AMX body: no AMX-INT8 here (or Linux refused its tile state)");
  struct shape {
    int k, n, group;
  };
  const shape shapes[] = {
      {768, 100, 128}, {768, 70, 768}, {3072, 64, 128}, {3072, 52, 3072}, {96, 40, 32}};
  const kernel_pool pool = thread_pool();
  for (const char* body : {"amx", "vnni", "portable"}) {
    const bool use_simd = body != std::string("portable");
    if ((body == std::string("amx") && !amx) || (use_simd && !vnni)) continue;
    set_quant_simd(use_simd);
    set_quant_amx(body == std::string("amx"));
    std::size_t same = 0, total = 0;
    for (const shape& sh : shapes)
      for (int m : {1, 9, 21, 40, 69}) {    // AMX: 32 rows at a time, the rest on VNNI
        if (!use_simd && m > 21) continue;  // the portable loop is slow
        const int k = sh.k, n = sh.n, G = k / sh.group, ldx = k + 8, ldy = n + 5;
        CAPTURE(std::string(body));
        CAPTURE(k);
        CAPTURE(n);
        CAPTURE(sh.group);
        CAPTURE(m);
        const auto w = normal(std::size_t(k) * n, 31, 0.05f);
        const auto x = normal(std::size_t(m) * ldx, 32);
        const auto bias = normal(n, 33);
        const auto y0 = normal(std::size_t(m) * ldy, 34);
        qbuf b(qformat::int8, w, k, n, sh.group);
        // the offset codes are quantize_activations' codes + 128, the scales the same bits
        std::vector<std::int8_t> xq(std::size_t(m) * k);
        std::vector<std::uint8_t> xu(xq.size());
        std::vector<float> xs(m), xs_u(m);
        quantize_activations(x.data(), ldx, m, k, false, xq.data(), xs.data());
        cpu::quantize_activations_u8(x.data(), ldx, m, k, xu.data(), xs_u.data());
        bool codes_same = xs == xs_u;
        for (std::size_t i = 0; i < xq.size(); ++i) codes_same = codes_same && xu[i] == xq[i] + 128;
        CHECK(codes_same);
        for (bool acc : {false, true}) {
          CAPTURE(acc);
          auto run = [&](auto&& fn) {
            std::vector<float> y(y0);
            fn(qgemm_io{x.data(), ldx, m, bias.data(), y.data(), ldy, acc});
            return y;
          };
          const auto ref =
              run([&](const qgemm_io& io) { cpu::qgemm_w8a8(b.q, xq.data(), xs.data(), io); });
          const auto got = run([&](const qgemm_io& io) {
            cpu::qgemm_w8a8_gemm(b.q, xu.data(), xs.data(), io, 0, n);
          });
          const auto* wc = reinterpret_cast<const std::int8_t*>(b.q.data);
          double worst = 0;  // |got - ref| / the bound's magnitude
          bool untouched = true;
          for (int i = 0; i < m; ++i)
            for (int o = 0; o < ldy; ++o) {
              const std::size_t at = std::size_t(i) * ldy + o;
              if (o >= n) {  // the padding past n stays as it was
                untouched = untouched && got[at] == y0[at];
                continue;
              }
              double mag = std::abs(bias[o]) + (acc ? std::abs(y0[at]) : 0.0);
              for (int g = 0; g < G; ++g) {
                long d = 0;
                for (int j = g * sh.group; j < (g + 1) * sh.group; ++j)
                  d += long(xq[std::size_t(i) * k + j]) * wc[std::size_t(o) * k + j];
                mag += double(xs[i]) * std::abs(double(b.q.scales[std::size_t(o) * G + g]) * d);
              }
              worst = std::max(worst, std::abs(double(got[at]) - ref[at]) / mag);
              same += got[at] == ref[at];
              ++total;
            }
          CHECK(untouched);
          CHECK(worst <= 1e-5);
          // outputs split anywhere give the same bits (each output's lane is computed alone)
          CHECK(got == run([&](const qgemm_io& io) {
                  cpu::qgemm_w8a8_gemm(b.q, xu.data(), xs.data(), io, 0, 17);
                  cpu::qgemm_w8a8_gemm(b.q, xu.data(), xs.data(), io, 17, std::min(n, 66));
                  cpu::qgemm_w8a8_gemm(b.q, xu.data(), xs.data(), io, std::min(n, 66), n);
                }));
          if (m > 8) {
            // the dispatch's prefill path, over threads: the same bits (on VNNI; without it the
            // dispatch keeps the dequantized tiles through sgemm)
            const kernel_pool_scope lend(&pool);
            const auto disp = run([&](const qgemm_io& io) { qgemm_w8a8(b.q, io); });
            if (use_simd) CHECK(disp == got);
            // batch-invariant mode keeps the direct kernel
            set_batch_invariant(true);
            const auto inv = run([&](const qgemm_io& io) { qgemm_w8a8(b.q, io); });
            set_batch_invariant(false);
            CHECK(inv == run([&](const qgemm_io& io) {
                    cpu::qgemm_w8a8_direct(b.q, xq.data(), xs.data(), io, 0, n);
                  }));
          }
        }
      }
    MESSAGE(std::string(body) << ": " << same << " of " << total
                              << " outputs bit-identical to the reference");
  }
  set_quant_simd(true);
  set_quant_amx(true);
}

// The prefill's activation codes (code + 128, its quotient without a division where the scale
// allows) against quantize_activations bit for bit: ties at every half step (to even), scales
// far from 1 both ways (the division's rows), zero and subnormal rows, a ragged tail of k.
TEST_CASE("quant: offset int8 activations equal quantize_activations' codes and scales") {
  for (bool use_simd : {true, false}) {
    if (use_simd && !quant_vnni()) continue;
    set_quant_simd(use_simd);
    for (int k : {40, 768}) {
      CAPTURE(use_simd);
      CAPTURE(k);
      const int ldx = k + 3;
      const float mults[] = {1.0f, 1e-30f, 1e-20f, 1e27f, 1e33f, 0.0f, 1e-42f, 0.125f};
      const float near[] = {0.3f, 1.7e-3f, 5.9e4f};  // scales that are not powers of two
      const int nm = int(std::size(mults)), m = nm + 2 + int(std::size(near));
      std::vector<float> x(std::size_t(m) * ldx, 0.0f);
      const auto r = normal(std::size_t(m) * ldx, 41);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < k; ++j) {
          const std::size_t at = std::size_t(i) * ldx + j;
          const float tie = float(j % 253 - 126) + 0.5f;  // |tie| <= 126.5: every half step
          if (i < nm) {
            x[at] = r[at] * mults[i];
          } else if (i < nm + 2) {  // absmax 127: scale 1 and 0.125, quotients on the half steps
            x[at] = (j == 0 ? 127.0f : tie) * (i == nm + 1 ? 0.125f : 1.0f);
          } else {  // within 2 ulps of (n + 0.5) * s: where x * (1 / s) alone rounds wrong
            const float sc = 127.0f * near[i - nm - 2] / 127.0f;
            float v = j == 0 ? 127.0f * near[i - nm - 2] : float(double(tie) * sc);
            for (int u = 0; u < j % 5; ++u) v = std::nextafter(v, (j / 5) % 2 ? 1e30f : -1e30f);
            x[at] = v;
          }
        }
      std::vector<std::int8_t> xq(std::size_t(m) * k);
      std::vector<std::uint8_t> xu(xq.size());
      std::vector<float> xs(m), xs_u(m);
      quantize_activations(x.data(), ldx, m, k, false, xq.data(), xs.data());
      cpu::quantize_activations_u8(x.data(), ldx, m, k, xu.data(), xs_u.data());
      for (int i = 0; i < m; ++i) {
        CAPTURE(i);
        CHECK(std::memcmp(&xs[i], &xs_u[i], 4) == 0);
        bool same = true;
        for (int j = 0; j < k; ++j) {
          const std::size_t at = std::size_t(i) * k + j;
          same = same && int(xu[at]) == xq[at] + 128;
        }
        CHECK(same);
      }
    }
  }
  set_quant_simd(true);
}
