// ggml GEMM twin (kernels/ggml_quant_cuda.cu) against cpu::ggml_gemm_reference (double sums of
// the exactly decoded weights times the fp32 activations: the twin keeps activations in fp32 for
// every format, so this is its spec, not the cpu q8_0 / q4_0 kernel, which quantizes them),
// simulated and on a GPU (tests/kernels/twin.hpp), through the public dispatch on device::cuda.
// Tolerance per output: |y - ref| <= (k / 32 + 24) * 2^-24 * (sum_j |w_j x_j| + |bias| + |y0|):
// a lane adds at most 8 ceil(k / 256) + 7 <= k / 32 + 15 products in fp32, the butterfly 5
// more, and bias and accumulate one rounding each on both sides. Also: x's padding (ldx > k) is
// NaN and y's padding (ldy > n) must stay as it was, m = 17 (two passes), weights at odd and even
// byte offsets, the same bits on a second run and for a row alone as in its batch, m = 0.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "grad_check.hpp"
#include "kernels/ggml_quant.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using sz = std::size_t;
using u8 = std::uint8_t;

namespace {

struct ggml_case {
  ggml_format fmt;
  std::vector<int> ks;  // inputs per row, valid for fmt
};

const ggml_case k_cases[] = {
    {ggml_format::f32, {1, 13, 264}}, {ggml_format::f16, {5, 40, 517}},
    {ggml_format::bf16, {9, 264}},    {ggml_format::q8_0, {32, 96, 1056}},
    {ggml_format::q4_0, {32, 1056}},  {ggml_format::q4_K, {256, 768}},
    {ggml_format::q6_K, {256, 768}},
};

// A [rows, cols] fp32 matrix with row stride ld >= cols, `pad` beyond column cols.
std::vector<float> padded(int rows, int cols, int ld, unsigned seed, float pad) {
  std::vector<float> v = zf::test::randn(sz(rows) * ld, seed);
  for (int r = 0; r < rows; ++r)
    for (int c = cols; c < ld; ++c) v[sz(r) * ld + c] = pad;
  return v;
}

// sum_j |w_j x_j| of every (row, output) from the reference decoder, in double.
std::vector<double> magnitudes(const ggml_matrix& w, const std::vector<float>& x, int ldx, int m) {
  const sz rb = row_bytes(w.fmt, w.k);
  std::vector<float> row(sz(w.k));
  std::vector<double> s(sz(m) * w.n, 0.0);
  for (int o = 0; o < w.n; ++o) {
    ggml_dequantize_row(w.fmt, static_cast<const u8*>(w.data) + sz(o) * rb, w.k, row.data());
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < w.k; ++j)
        s[sz(i) * w.n + o] += std::abs(double(row[sz(j)]) * x[sz(i) * ldx + j]);
  }
  return s;
}

// One (format, k, n, m) call with the variant's strides, bias, accumulation and weight offset.
template <class B>
void check_one(B b, ggml_format fmt, int k, int n, int m, int variant) {
  const bool bias_on = variant % 2 == 0, acc = variant % 3 != 0;
  const int ldx = variant % 2 ? k + 3 : k, ldy = variant % 4 == 1 ? n : n + 2;
  const sz off = sz(variant % 3);  // the weights at byte offset 0, 1 or 2
  CAPTURE(ldx);
  CAPTURE(ldy);
  CAPTURE(bias_on);
  CAPTURE(acc);
  CAPTURE(off);
  const sz rb = row_bytes(fmt, k);
  const auto wf = zf::test::randn(sz(n) * k, 100 + variant, 0.5f);
  std::vector<u8> wq(off + sz(n) * rb);
  ggml_quantize_rows(fmt, wf.data(), 0, n, k, wq.data() + off);
  const auto x = padded(m, k, ldx, 200 + variant, std::numeric_limits<float>::quiet_NaN());
  const auto bias = zf::test::randn(sz(n), 300 + variant);
  const auto y0 = padded(m, n, ldy, 400 + variant, 7.0f);

  ggml_matrix w{fmt, n, k, wq.data() + off};
  auto want = y0;
  qgemm_io io{x.data(),    variant % 2 ? ldx : 0,      m,  bias_on ? bias.data() : nullptr,
              want.data(), variant % 4 == 1 ? 0 : ldy, acc};
  cpu::ggml_gemm_reference(w, io);
  const auto mag = magnitudes(w, x, ldx, m);

  auto dw = b.upload(wq);
  auto dx = b.upload(x), db = b.upload(bias), dy = b.upload(y0);
  ggml_matrix wd{fmt, n, k, dw.p + off};
  qgemm_io iod = io;
  iod.x = dx.p;
  iod.bias = bias_on ? db.p : nullptr;
  iod.y = dy.p;
  ZF_TWIN(b, ggml_gemm, wd, iod);
  const auto got = dy.host();

  const double eps = std::ldexp(1.0, -24) * (k / 32 + 24);
  int bad = 0;
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < ldy; ++c) {
      const sz at = sz(i) * ldy + c;
      if (c >= n) {
        bad += got[at] != 7.0f;  // padding untouched
        continue;
      }
      const double bound = eps * (mag[sz(i) * n + c] + (bias_on ? std::abs(bias[sz(c)]) : 0.0) +
                                  (acc ? std::abs(y0[at]) : 0.0)) +
                           1e-30;
      if (!(std::abs(double(got[at]) - want[at]) <= bound)) {
        if (bad < 3) MESSAGE("row " << i << " out " << c << ": " << got[at] << " vs " << want[at]);
        ++bad;
      }
    }
  CHECK(bad == 0);

  // Deterministic, and a row's bits do not depend on its batch: row m - 1 alone equals its value
  // in the batch (run without accumulation, so the first result is not fed back).
  if (variant % 3 == 0 && m > 1) {
    auto dy1 = b.upload(y0);
    qgemm_io one = iod;
    one.y = dy1.p;
    ZF_TWIN(b, ggml_gemm, wd, one);
    CHECK(dy1.host() == got);
    auto dr = b.upload(y0);
    one.x = dx.p + sz(m - 1) * ldx;
    one.y = dr.p + sz(m - 1) * ldy;
    one.m = 1;
    ZF_TWIN(b, ggml_gemm, wd, one);
    const auto alone = dr.host();
    bool same = true;
    for (int c = 0; c < n; ++c)
      same = same && alone[sz(m - 1) * ldy + c] == got[sz(m - 1) * ldy + c];
    CHECK(same);
  }
}

}  // namespace

TEST_CASE("cuda twin: ggml_gemm equals the reference in every format") {
  zf::test::twin::both("the ggml_gemm twin", [](auto b) {
    int variant = 0;
    for (const ggml_case& gc : k_cases) {
      const std::string name = ggml_info(gc.fmt).name;
      CAPTURE(name);
      for (int k : gc.ks) {
        CAPTURE(k);
        for (int m : {1, 3, 16, 17}) {
          const int n =
              (variant % 4 == 0) ? 1 : (variant % 4 == 1 ? 5 : (variant % 4 == 2 ? 33 : 7));
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(variant);
          check_one(b, gc.fmt, k, n, m, variant);
          ++variant;
        }
      }
    }
  });
}

TEST_CASE("cuda twin: ggml_gemm with m = 0 writes nothing") {
  zf::test::twin::both("the ggml_gemm twin (m = 0)", [](auto b) {
    const int k = 32, n = 3;
    std::vector<u8> wq(row_bytes(ggml_format::q8_0, k) * n, 0);
    const std::vector<float> x(k, 1.0f), y0(n, 5.0f);
    auto dw = b.upload(wq);
    auto dx = b.upload(x), dy = b.upload(y0);
    ggml_matrix w{ggml_format::q8_0, n, k, dw.p};
    qgemm_io io{dx.p, 0, 0, nullptr, dy.p, 0, false};
    ZF_TWIN(b, ggml_gemm, w, io);
    CHECK(dy.host() == y0);
  });
}
