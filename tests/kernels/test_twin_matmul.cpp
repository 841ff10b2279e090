// Matmul twins (kernels/matmul_cuda.cu: GEMMs planned for cuBLASLt, bf16 rounding, the bias
// gradient) against the cpu kernels, simulated and on a GPU (tests/kernels/twin.hpp). In the
// simulation the GEMMs run gemm_sim.cpp's host definition of the planned cuBLASLt call, so these
// check the row-major -> column-major translation end to end; the first case checks that host
// definition itself against cuBLASLt's documented column-major semantics.
// Tolerances: fp32 GEMMs |err| <= 1e-5 |want| + 1e-5 max|want| (fp32 accumulation, only the
// summation order differs; k <= 300). bf16 operands: the same, as every bf16 product is exact in
// fp32. A 16-bit compute precision: the same in the simulation (operands rounded to nearest even
// as the cpu kernel does); 1e-2 on a GPU, where cuBLAS's *_FAST_16BF/16F may round differently
// or keep TF32 precision. round_bf16: the same bits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "harness.hpp"
#include "kernels/convert.hpp"
#include "kernels/cublaslt_plan.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/matmul.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;
using zf::test::randn;
using zf::test::tol;

namespace {

constexpr tol k_fp32{1e-5, 1e-5};

// A row-major [rows, cols] matrix with row stride ld: normal values, `pad` beyond column cols
// (NaN for inputs: a read of the padding shows; a finite value for outputs: both backends must
// leave it as it is).
std::vector<float> stored(int rows, int cols, int ld, unsigned seed, float pad) {
  std::vector<float> v = randn(static_cast<std::size_t>(rows) * ld, seed);
  for (int r = 0; r < rows; ++r)
    for (int c = cols; c < ld; ++c) v[static_cast<std::size_t>(r) * ld + c] = pad;
  return v;
}

std::vector<std::uint16_t> to_bf16_bits(const std::vector<float>& x) {
  std::vector<std::uint16_t> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = f32_to_bf16(x[i]);
  return out;
}

// The gemm check rows, plus a GEMM with k = 0 (only the beta scaling remains).
std::vector<sh::gemm_case> gemm_rows() {
  std::vector<sh::gemm_case> rows;
  for (const auto& s : sh::gemm_cases)
    if (s.use & sh::check) rows.push_back(s);
  rows.push_back({3, 5, 0, "nn tn nt tt", sh::check});
  return rows;
}

// The linear check rows, plus n = 257 (the bias gradient's unrolled rows and a partial column
// block) and ic = 0 (an empty GEMM: y is the bias alone).
std::vector<sh::linear_case> linear_rows() {
  std::vector<sh::linear_case> rows;
  for (const auto& s : sh::linear_cases)
    if (s.use & sh::check) rows.push_back(s);
  rows.push_back({257, 9, 70, sh::check});
  rows.push_back({3, 0, 5, sh::check});
  return rows;
}

struct gemm_args {
  bool ta, tb, padded;
  float alpha, beta;
};
const float k_alpha_beta[][2] = {{1.0f, 0.0f}, {0.5f, 1.5f}, {-1.25f, 1.0f}};

// One gemm (fp32, or bf16 operands) by the twin and by the cpu kernel on the same inputs.
template <class B>
void check_gemm(B b, const sh::gemm_case& s, const gemm_args& g, bool bf16, tol t) {
  const int ar = g.ta ? s.k : s.m, ac = g.ta ? s.m : s.k;
  const int br = g.tb ? s.n : s.k, bc = g.tb ? s.k : s.n;
  const int lda = ac + (g.padded ? 3 : 0), ldb = bc + (g.padded ? 5 : 0),
            ldc = s.n + (g.padded ? 2 : 0);
  const int pa = g.padded ? lda : 0, pb = g.padded ? ldb : 0, pc = g.padded ? ldc : 0;
  const auto a = stored(ar, ac, lda, 1, NAN), bm = stored(br, bc, ldb, 2, NAN);
  auto c = stored(s.m, s.n, ldc, 3, 7.0f);
  auto dc = b.upload(c);
  if (bf16) {
    const auto a16 = to_bf16_bits(a), b16 = to_bf16_bits(bm);
    auto da = b.upload(a16), db = b.upload(b16);
    cpu::gemm_bf16(g.ta, g.tb, s.m, s.n, s.k, g.alpha, a16.data(), pa, b16.data(), pb, g.beta,
                   c.data(), pc);
    ZF_TWIN(b, gemm_bf16, g.ta, g.tb, s.m, s.n, s.k, g.alpha, da.p, pa, db.p, pb, g.beta, dc.p, pc);
  } else {
    auto da = b.upload(a), db = b.upload(bm);
    cpu::gemm(g.ta, g.tb, s.m, s.n, s.k, g.alpha, a.data(), pa, bm.data(), pb, g.beta, c.data(),
              pc);
    ZF_TWIN(b, gemm, g.ta, g.tb, s.m, s.n, s.k, g.alpha, da.p, pa, db.p, pb, g.beta, dc.p, pc);
  }
  CHECK(zf::test::near(dc.host(), widen(c), t));
}

// Every check row, transpose, dense / padded layout and alpha/beta pair.
template <class B>
void check_all_gemms(B b, bool bf16, tol t) {
  for (const auto& s : gemm_rows()) {
    CAPTURE(s.m);
    CAPTURE(s.n);
    CAPTURE(s.k);
    for (int ops = 0; ops < 4; ++ops)
      for (int padded = 0; padded < 2; ++padded)
        for (const auto& ab : k_alpha_beta) {
          const gemm_args g{(ops & 1) != 0, (ops & 2) != 0, padded != 0, ab[0], ab[1]};
          CAPTURE(g.ta);
          CAPTURE(g.tb);
          CAPTURE(g.padded);
          CAPTURE(g.alpha);
          CAPTURE(g.beta);
          check_gemm(b, s, g, bf16, t);
        }
  }
}

// The column-major definition of cublaslt_plan.hpp in double, on fp32 operands.
std::vector<double> lt_reference(const lt_gemm& g, const std::vector<float>& a,
                                 const std::vector<float>& bm, const std::vector<float>& c,
                                 const std::vector<float>& bias) {
  std::vector<double> d(c.begin(), c.end());
  for (int j = 0; j < g.n; ++j)
    for (int i = 0; i < g.m; ++i) {
      double acc = 0.0;
      for (int p = 0; p < g.k; ++p) {
        const double x = g.trans_a ? a[p + static_cast<std::size_t>(i) * g.lda]
                                   : a[i + static_cast<std::size_t>(p) * g.lda];
        const double y = g.trans_b ? bm[j + static_cast<std::size_t>(p) * g.ldb]
                                   : bm[p + static_cast<std::size_t>(j) * g.ldb];
        acc += x * y;
      }
      double& out = d[i + static_cast<std::size_t>(j) * g.ldc];
      out = g.alpha * acc + (g.beta != 0.0f ? g.beta * out : 0.0) +
            (g.epilogue == lt_epilogue::bias ? bias[i] : 0.0);
    }
  return d;
}

}  // namespace

TEST_CASE("cuda twin: the simulated lt_matmul is cuBLASLt's column-major definition") {
  // Independent of the planner: a mistake mirrored in the planner and in the simulation would
  // pass the end-to-end cases below but not cuBLASLt on a GPU.
  const int m = 5, n = 4, k = 3;
  for (int ops = 0; ops < 4; ++ops)
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      lt_gemm g;
      g.m = m;
      g.n = n;
      g.k = k;
      g.trans_a = (ops & 1) != 0;
      g.trans_b = (ops & 2) != 0;
      g.lda = (g.trans_a ? k : m) + 2;  // leading dimension = stored rows + padding
      g.ldb = (g.trans_b ? n : k) + 1;
      g.ldc = m + 3;
      g.alpha = 0.75f;
      g.beta = with_bias ? 0.0f : -0.5f;
      CAPTURE(g.trans_a);
      CAPTURE(g.trans_b);
      CAPTURE(with_bias);
      const auto a = randn(static_cast<std::size_t>(g.lda) * (g.trans_a ? m : k), 11);
      const auto bm = randn(static_cast<std::size_t>(g.ldb) * (g.trans_b ? k : n), 12);
      auto c = randn(static_cast<std::size_t>(g.ldc) * n, 13);
      const auto bias = randn(static_cast<std::size_t>(m), 14);
      if (with_bias) {
        g.epilogue = lt_epilogue::bias;
        g.bias = bias.data();
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < m; ++i) c[i + static_cast<std::size_t>(j) * g.ldc] = NAN;
      }
      const auto want = lt_reference(g, a, bm, c, bias);
      g.a = a.data();
      g.b = bm.data();
      g.c = c.data();
      cuda_sim::lt_matmul(g);
      CHECK(zf::test::near(c, want, tol{1e-6, 1e-6}));  // beta 0: C (NaN) was not read
    }
  // cuBLASLt's refusals: a leading dimension under the stored rows, an empty k.
  std::vector<float> buf(64, 1.0f);
  lt_gemm g;
  g.m = 4;
  g.n = 3;
  g.k = 2;
  g.a = g.b = buf.data();
  g.c = buf.data();
  g.lda = 4;
  g.ldb = 2;
  g.ldc = 4;
  g.trans_a = true;  // A stored [k, m]: lda 4 >= 2 fine
  CHECK_NOTHROW(cuda_sim::lt_matmul(g));
  g.trans_a = false;
  g.lda = 3;  // A stored [m, k] = [4, 2] needs lda >= 4
  CHECK_THROWS_AS(cuda_sim::lt_matmul(g), kernel_error);
  g.lda = 4;
  g.ldc = 3;
  CHECK_THROWS_AS(cuda_sim::lt_matmul(g), kernel_error);
  g.ldc = 4;
  g.k = 0;
  CHECK_THROWS_AS(cuda_sim::lt_matmul(g), kernel_error);
}

TEST_CASE("cuda twin: gemm equals the cpu gemm over transposes, leading dimensions, alpha/beta") {
  zf::test::twin::both("the gemm twin", [](auto b) { check_all_gemms(b, false, k_fp32); });
}

TEST_CASE("cuda twin: gemm at a 16-bit compute precision equals the cpu gemm") {
  zf::test::twin::both("the 16-bit precision gemm twin", [](auto b) {
    using B = decltype(b);
    const tol t = B::simulated ? k_fp32 : tol{1e-2, 1e-2};
    for (precision p : {precision::bf16, precision::f16}) {
      CAPTURE(precision_name(p));
      const precision_scope scope(p);
      for (const auto& s : gemm_rows())
        for (int ops = 0; ops < 4; ++ops) {
          CAPTURE(s.m);
          CAPTURE(s.n);
          CAPTURE(s.k);
          CAPTURE(ops);
          check_gemm(b, s, {(ops & 1) != 0, (ops & 2) != 0, ops == 3, 1.0f, 0.5f}, false, t);
        }
    }
  });
}

TEST_CASE("cuda twin: gemm_bf16 equals the cpu gemm_bf16") {
  zf::test::twin::both("the gemm_bf16 twin", [](auto b) { check_all_gemms(b, true, k_fp32); });
}

TEST_CASE("cuda twin: round_bf16 gives the cpu kernel's bits") {
  zf::test::twin::both("the round_bf16 twin", [](auto b) {
    // Odd widths (the scalar kernel), multiples of 4 (the vector one), strided rows, and the
    // values rounding cares about: ties either way, overflow to inf, NaN, subnormals.
    const int shapes[][3] = {{1, 1, 0},   {3, 7, 0},   {5, 8, 0},
                             {4, 12, 16}, {9, 33, 40}, {70, 64, 0}};
    for (const auto& sz : shapes) {
      const int rows = sz[0], cols = sz[1], ld = sz[2];
      CAPTURE(rows);
      CAPTURE(cols);
      CAPTURE(ld);
      const int width = ld == 0 ? cols : ld;
      auto x = randn(static_cast<std::size_t>(rows) * width, 21, 100.0f);
      const float specials[] = {1.0f + 1.0f / 256,
                                1.0f + 3.0f / 256,
                                -(1.0f + 1.0f / 256),
                                3.4e38f,
                                INFINITY,
                                -INFINITY,
                                NAN,
                                1e-40f,
                                -0.0f};
      for (std::size_t i = 0; i < x.size() && i < std::size(specials); ++i) x[i] = specials[i];
      std::vector<std::uint16_t> want(static_cast<std::size_t>(rows) * cols, 0);
      cpu::round_bf16(x.data(), rows, cols, ld, want.data());
      auto dx = b.upload(x);
      auto dd = b.upload(std::vector<std::uint16_t>(want.size(), 0xdead));
      ZF_TWIN(b, round_bf16, dx.p, rows, cols, ld, dd.p);
      const auto got = dd.host();
      // The cpu kernel (oneDNN's conversion) flushes fp32 subnormals to zero; the twin rounds
      // them as kernels/convert.hpp does (and as __float2bfloat16_rn would): compared there.
      int bad = 0;
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          const std::size_t i = static_cast<std::size_t>(r) * cols + c;
          const float v = x[static_cast<std::size_t>(r) * width + c];
          const std::uint16_t ref = std::fpclassify(v) == FP_SUBNORMAL ? f32_to_bf16(v) : want[i];
          const bool both_nan = std::isnan(bf16_to_f32(got[i])) && std::isnan(bf16_to_f32(ref));
          if (got[i] != ref && !both_nan) ++bad;
        }
      CHECK(bad == 0);
    }
  });
}

TEST_CASE("cuda twin: linear_forward equals the cpu kernel, with and without bias") {
  zf::test::twin::both("the linear_forward twin", [](auto b) {
    for (const auto& s : linear_rows())
      for (int with_bias = 0; with_bias < 2; ++with_bias) {
        CAPTURE(s.n);
        CAPTURE(s.ic);
        CAPTURE(s.oc);
        CAPTURE(with_bias);
        const auto x = randn(static_cast<std::size_t>(s.n) * s.ic, 31);
        const auto w = randn(static_cast<std::size_t>(s.ic) * s.oc, 32, 0.5f);
        const auto bias = randn(static_cast<std::size_t>(s.oc), 33);
        // y is overwritten: NaN before must not show.
        std::vector<float> y(static_cast<std::size_t>(s.n) * s.oc, NAN);
        auto dx = b.upload(x), dw = b.upload(w), dbias = b.upload(bias), dy = b.upload(y);
        const float* bp = with_bias ? dbias.p : nullptr;
        cpu::linear_forward(x.data(), w.data(), with_bias ? bias.data() : nullptr, y.data(), s.n,
                            s.ic, s.oc);
        ZF_TWIN(b, linear_forward, dx.p, dw.p, bp, dy.p, s.n, s.ic, s.oc);
        CHECK(zf::test::near(dy.host(), widen(y), k_fp32));
      }
  });
}

namespace {

// linear_backward by the twin and by the cpu kernel from the same starting dx (garbage: it is
// overwritten), dw and db (nonzero: they accumulate); `which` drops outputs (1: dx, 2: dw,
// 4: db); bf16: linear_backward_bf16 over the rounded x and w (dx and dw are required there).
template <class B>
void check_backward(B b, const sh::linear_case& s, int which, bool bf16, tol t = k_fp32) {
  const std::size_t nx = static_cast<std::size_t>(s.n) * s.ic,
                    nw = static_cast<std::size_t>(s.ic) * s.oc,
                    ny = static_cast<std::size_t>(s.n) * s.oc;
  const auto x = randn(nx, 41), w = randn(nw, 42, 0.5f), dy = randn(ny, 43);
  auto dx = randn(nx, 44, 3.0f), dw = randn(nw, 45), db = randn(static_cast<std::size_t>(s.oc), 46);
  // dy's buffer runs on into NaN rows: a read past row n shows in db.
  std::vector<float> dy_guarded = dy;
  dy_guarded.resize(ny + static_cast<std::size_t>(128) * s.oc, NAN);
  auto gx = b.upload(x), gw = b.upload(w), gdy = b.upload(dy_guarded);
  auto gdx = b.upload(dx), gdw = b.upload(dw), gdb = b.upload(db);
  float* pdx = which & 1 ? nullptr : gdx.p;
  float* pdw = which & 2 ? nullptr : gdw.p;
  float* pdb = which & 4 ? nullptr : gdb.p;
  if (bf16) {
    std::vector<std::uint16_t> x16(nx), w16(nw);
    cpu::round_bf16(x.data(), s.n, s.ic, s.ic, x16.data());
    cpu::round_bf16(w.data(), s.ic, s.oc, s.oc, w16.data());
    auto gx16 = b.upload(x16), gw16 = b.upload(w16);
    cpu::linear_backward_bf16(x16.data(), w16.data(), dy.data(), dx.data(), dw.data(),
                              which & 4 ? nullptr : db.data(), s.n, s.ic, s.oc);
    ZF_TWIN(b, linear_backward_bf16, gx16.p, gw16.p, gdy.p, pdx, pdw, pdb, s.n, s.ic, s.oc);
  } else {
    cpu::linear_backward(x.data(), w.data(), dy.data(), which & 1 ? nullptr : dx.data(),
                         which & 2 ? nullptr : dw.data(), which & 4 ? nullptr : db.data(), s.n,
                         s.ic, s.oc);
    ZF_TWIN(b, linear_backward, gx.p, gw.p, gdy.p, pdx, pdw, pdb, s.n, s.ic, s.oc);
  }
  // Dropped outputs stay as they were on both sides, so whole buffers compare.
  CHECK(zf::test::near(gdx.host(), widen(dx), t));
  CHECK(zf::test::near(gdw.host(), widen(dw), t));
  CHECK(zf::test::near(gdb.host(), widen(db), k_fp32));
}

}  // namespace

TEST_CASE("cuda twin: linear_backward equals the cpu kernel, accumulating dw and db") {
  zf::test::twin::both("the linear_backward twin", [](auto b) {
    for (const auto& s : linear_rows())
      for (int which : {0, 1, 2, 4, 5}) {
        CAPTURE(s.n);
        CAPTURE(s.ic);
        CAPTURE(s.oc);
        CAPTURE(which);
        check_backward(b, s, which, false);
      }
  });
}

TEST_CASE("cuda twin: linear_backward_bf16 equals the cpu kernel") {
  zf::test::twin::both("the linear_backward_bf16 twin", [](auto b) {
    for (const auto& s : linear_rows())
      for (int which : {0, 4}) {
        CAPTURE(s.n);
        CAPTURE(s.ic);
        CAPTURE(s.oc);
        CAPTURE(which);
        check_backward(b, s, which, true);
      }
  });
}

TEST_CASE("cuda twin: linear_backward at bf16 precision and its bias gradient's determinism") {
  zf::test::twin::both("the bf16-precision linear_backward twin", [](auto b) {
    using B = decltype(b);
    {
      const precision_scope scope(precision::bf16);
      for (const auto& s : linear_rows()) {
        CAPTURE(s.n);
        CAPTURE(s.ic);
        CAPTURE(s.oc);
        check_backward(b, s, 0, false, B::simulated ? k_fp32 : tol{1e-2, 1e-2});
      }
    }
    // The same inputs give the same bits: db's column sums run in a fixed order.
    const int n = 300, oc = 100;
    const auto dy = randn(static_cast<std::size_t>(n) * oc, 51);
    const auto db0 = randn(static_cast<std::size_t>(oc), 52);
    auto g1 = b.upload(db0), g2 = b.upload(db0), gdy = b.upload(dy);
    ZF_TWIN(b, linear_backward, nullptr, nullptr, gdy.p, nullptr, nullptr, g1.p, n, 0, oc);
    ZF_TWIN(b, linear_backward, nullptr, nullptr, gdy.p, nullptr, nullptr, g2.p, n, 0, oc);
    CHECK(g1.host() == g2.host());
  });
}
