// bf16 linear family (kernels/bf16_linear.hpp): the direct kernel (AVX-512 BF16 where the CPU has
// it, and the portable loop) equals the double reference and the fp32 GEMM of the bf16-rounded
// weights over a shape sweep with odd input and output tails, bias, accumulation and strides; a
// row's outputs are the same bits whatever the batch and the output split; the three bf16 parts
// rebuild an fp32 activation; the prefill path equals the reference over bf16-rounded activations.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "kernels/bf16_linear.hpp"
#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/matmul.hpp"

using namespace zf::kernels;
using sz = std::size_t;

namespace {

std::vector<float> normal(sz n, unsigned seed, float sd = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<std::uint16_t> to_bf16_bits(const std::vector<float>& w) {
  std::vector<std::uint16_t> b(w.size());
  for (sz i = 0; i < w.size(); ++i) b[i] = f32_to_bf16(w[i]);
  return b;
}

// max |a - b| / max |b| over the first m rows of n columns (row strides la, lb).
double rel(const float* a, int la, const float* b, int lb, int m, int n) {
  double d = 0, s = 0;
  for (int i = 0; i < m; ++i)
    for (int o = 0; o < n; ++o) {
      d = std::max(d, std::abs(double(a[sz(i) * la + o]) - b[sz(i) * lb + o]));
      s = std::max(s, std::abs(double(b[sz(i) * lb + o])));
    }
  return s > 0 ? d / s : d;
}

// The direct kernel over all outputs, as the dispatch runs it (parts split when SIMD is on).
void direct(const bf16_matrix& w, const qgemm_io& io) {
  std::vector<std::uint16_t> xs(cpu::bf16_split_elems(io.m, w.k, 3));
  cpu::bf16_split_rows(io.x, io.ldx, io.m, w.k, 3, xs.data());
  cpu::bf16_gemm_direct(w, io, xs.data(), 0, w.n);
}

struct simd_scope {  // the portable loop for a scope
  bool prev = bf16_simd();
  explicit simd_scope(bool on) { set_bf16_simd(on); }
  ~simd_scope() { set_bf16_simd(prev); }
};

}  // namespace

TEST_CASE("bf16 linear: the direct kernel equals the reference and the fp32 GEMM of rounded W") {
  MESSAGE("AVX-512 BF16 direct kernel: " << std::string(bf16_simd() ? "yes"
                                                                    : "no (portable loop only)"));
  for (bool simd : {true, false}) {
    simd_scope s(simd);
    for (int m : {1, 2, 3, 5, 16})
      for (int k : {1, 7, 31, 32, 33, 100, 768})
        for (int n : {1, 3, 9, 17, 64}) {
          CAPTURE(simd);
          CAPTURE(m);
          CAPTURE(k);
          CAPTURE(n);
          const auto wf = normal(sz(n) * k, 1 + k + n);
          const auto wb = to_bf16_bits(wf);
          std::vector<float> wr(wb.size());  // the rounded weights, [n, k]
          for (sz i = 0; i < wb.size(); ++i) wr[i] = bf16_to_f32(wb[i]);
          const int ldx = k + 3, ldy = n + 5;
          const auto x = normal(sz(m) * ldx, 7 + m);
          const auto bias = normal(sz(n), 9);
          const auto y0 = normal(sz(m) * ldy, 11);
          const bf16_matrix w{n, k, wb.data()};
          for (bool acc : {false, true}) {
            std::vector<float> got = y0, ref = y0, sg = y0;
            direct(w, {x.data(), ldx, m, bias.data(), got.data(), ldy, acc});
            cpu::bf16_gemm_reference(w, {x.data(), ldx, m, bias.data(), ref.data(), ldy, acc});
            CHECK(rel(got.data(), ldy, ref.data(), ldy, m, n) < 1e-5);
            gemm(false, true, m, n, k, 1.0f, x.data(), ldx, wr.data(), k, acc ? 1.0f : 0.0f,
                 sg.data(), ldy);
            for (int i = 0; i < m; ++i)
              for (int o = 0; o < n; ++o) sg[sz(i) * ldy + o] += bias[sz(o)];
            CHECK(rel(got.data(), ldy, sg.data(), ldy, m, n) < 1e-5);
            // columns past n in each output row are left alone
            for (int i = 0; i < m; ++i)
              for (int o = n; o < ldy; ++o) CHECK(got[sz(i) * ldy + o] == y0[sz(i) * ldy + o]);
          }
        }
  }
}

TEST_CASE("bf16 linear: a row's outputs are the same bits in any batch and any output split") {
  for (bool simd : {true, false}) {
    simd_scope s(simd);
    const int m = 7, k = 200, n = 45;
    const auto wb = to_bf16_bits(normal(sz(n) * k, 3));
    const auto x = normal(sz(m) * k, 4);
    const bf16_matrix w{n, k, wb.data()};
    std::vector<float> all(sz(m) * n);
    direct(w, {x.data(), 0, m, nullptr, all.data(), 0, false});
    for (int i = 0; i < m; ++i) {  // alone
      std::vector<float> one(static_cast<sz>(n));
      direct(w, {x.data() + sz(i) * k, 0, 1, nullptr, one.data(), 0, false});
      for (int o = 0; o < n; ++o) CHECK(one[sz(o)] == all[sz(i) * n + o]);
    }
    std::vector<float> pieces(sz(m) * n);  // outputs in uneven pieces
    std::vector<std::uint16_t> xs(cpu::bf16_split_elems(m, k, 3));
    cpu::bf16_split_rows(x.data(), 0, m, k, 3, xs.data());
    const qgemm_io io{x.data(), 0, m, nullptr, pieces.data(), 0, false};
    for (int o0 = 0; o0 < n;) {
      const int o1 = std::min(n, o0 + 1 + o0 % 6);
      cpu::bf16_gemm_direct(w, io, xs.data(), o0, o1);
      o0 = o1;
    }
    CHECK(pieces == all);
  }
}

TEST_CASE("bf16 linear: threads lent through kernel_pool give the same bits") {
  const int m = 3, k = 1024, n = 520;
  const auto wb = to_bf16_bits(normal(sz(n) * k, 5));
  const auto x = normal(sz(m) * k, 6);
  const bf16_matrix w{n, k, wb.data()};
  std::vector<float> alone(sz(m) * n), pooled(sz(m) * n);
  bf16_gemm(w, {x.data(), 0, m, nullptr, alone.data(), 0, false});
  int calls = 0;
  const kernel_pool pool = zf::test::thread_per_piece_pool(3, &calls);
  {
    kernel_pool_scope lend(&pool);
    bf16_gemm(w, {x.data(), 0, m, nullptr, pooled.data(), 0, false});
  }
  CHECK(calls > 1);
  CHECK(pooled == alone);
}

TEST_CASE("bf16 linear: three bf16 parts rebuild an fp32 activation, the pad is zero") {
  for (bool simd : {true, false}) {
    simd_scope s(simd);
    const int k = 45;
    auto x = normal(sz(k), 8, 3.0f);
    x[0] = 1.0f + 0x1p-23f;  // every mantissa bit matters
    x[1] = -0.0f;
    x[2] = 65504.123f;
    std::vector<std::uint16_t> xs(cpu::bf16_split_elems(1, k, 3), 0xffff);
    cpu::bf16_split_rows(x.data(), 0, 1, k, 3, xs.data());
    const int kp = 64;
    REQUIRE(xs.size() == sz(3 * kp));
    for (int j = 0; j < k; ++j) {
      const double sum = double(bf16_to_f32(xs[sz(j)])) + bf16_to_f32(xs[sz(kp + j)]) +
                         bf16_to_f32(xs[sz(2 * kp + j)]);
      CHECK(sum == double(x[sz(j)]));
      CHECK(xs[sz(j)] == f32_to_bf16(x[sz(j)]));  // part 0 is round to nearest even
    }
    for (int p = 0; p < 3; ++p)
      for (int j = k; j < kp; ++j) CHECK(xs[sz(p * kp + j)] == 0);
  }
}

TEST_CASE("bf16 linear: prefill rows equal the reference over bf16-rounded activations") {
  const int m = 40, k = 96, n = 70;
  const auto wb = to_bf16_bits(normal(sz(n) * k, 12));
  auto x = normal(sz(m) * k, 13);
  const auto bias = normal(sz(n), 14);
  const bf16_matrix w{n, k, wb.data()};
  for (bool acc : {false, true}) {
    CAPTURE(acc);
    const auto y0 = normal(sz(m) * n, 15);
    std::vector<float> got = y0, ref = y0;
    bf16_gemm(w, {x.data(), 0, m, bias.data(), got.data(), 0, acc});
    std::vector<float> xr(x.size());
    for (sz i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
    cpu::bf16_gemm_reference(w, {xr.data(), 0, m, bias.data(), ref.data(), 0, acc});
    CHECK(rel(got.data(), n, ref.data(), n, m, n) < 1e-5);
  }
}
