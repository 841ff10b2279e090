#include <doctest/doctest.h>

#include <vector>

#include "grad_check.hpp"
#include "kernels/matmul.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;
namespace ref = zf::test::ref;

TEST_CASE("gemm matches a naive triple loop for every transpose, with strides") {
  const int m = 13, n = 17, k = 11;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      for (int strided = 0; strided < 2; ++strided) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(strided);
        const int a_rows = ta ? k : m, a_cols = ta ? m : k;
        const int b_rows = tb ? n : k, b_cols = tb ? k : n;
        const int lda = strided ? a_cols + 5 : a_cols, ldb = strided ? b_cols + 3 : b_cols;
        const int ldc = strided ? n + 7 : n;
        auto a = randn(static_cast<std::size_t>(a_rows) * lda, 1);
        auto b = randn(static_cast<std::size_t>(b_rows) * ldb, 2);
        auto c = randn(static_cast<std::size_t>(m) * ldc, 3);
        std::vector<double> want(c.size());
        for (std::size_t i = 0; i < c.size(); ++i) want[i] = c[i];  // padding must stay
        ref::gemm(ta, tb, m, n, k, 0.7, a.data(), lda, b.data(), ldb, 0.3, c.data(), want.data(),
                  ldc);
        // ld = 0 means dense: exercise that spelling on the unstrided runs.
        gemm(ta, tb, m, n, k, 0.7f, a.data(), strided ? lda : 0, b.data(), strided ? ldb : 0, 0.3f,
             c.data(), strided ? ldc : 0);
        CHECK(all_close(c.data(), want.data(), c.size(), 1e-5, 1e-5));
      }
    }
  }
}

TEST_CASE("gemm with beta 0 ignores garbage in c, and k = 0 only scales c") {
  const int m = 4, n = 5, k = 3;
  auto a = randn(m * k, 4), b = randn(k * n, 5);
  std::vector<float> c(m * n, std::nanf(""));
  std::vector<double> want(m * n);
  std::vector<float> zeros(m * n, 0.0f);
  ref::gemm(false, false, m, n, k, 1.0, a.data(), k, b.data(), n, 0.0, zeros.data(), want.data(),
            n);
  gemm(false, false, m, n, k, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0);
  CHECK(all_close(c.data(), want.data(), c.size(), 1e-6, 1e-6));

  std::vector<float> c2(m * n, 2.0f);
  gemm(false, false, m, n, 0, 1.0f, a.data(), 0, b.data(), 0, 0.5f, c2.data(), 0);
  for (float x : c2) CHECK(x == 1.0f);
  std::vector<float> c3(m * n, std::nanf(""));
  gemm(true, true, m, n, 0, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c3.data(), 0);
  for (float x : c3) CHECK(x == 0.0f);
}

TEST_CASE("linear forward and backward: values, overwrite/accumulate semantics") {
  const int n = 7, ic = 9, oc = 6;
  auto x = randn(n * ic, 10), w = randn(ic * oc, 11), b = randn(oc, 12);
  std::vector<float> y(n * oc, std::nanf(""));
  linear_forward(x.data(), w.data(), b.data(), y.data(), n, ic, oc);
  std::vector<double> want(n * oc);
  ref::linear_forward(x.data(), w.data(), b.data(), n, ic, oc, want.data());
  CHECK(all_close(y.data(), want.data(), y.size(), 1e-5, 1e-5));
  std::fill(y.begin(), y.end(), std::nanf(""));
  linear_forward(x.data(), w.data(), nullptr, y.data(), n, ic, oc);
  for (int r = 0; r < n; ++r) {
    for (int o = 0; o < oc; ++o) want[r * oc + o] -= b[o];
  }
  CHECK(all_close(y.data(), want.data(), y.size(), 1e-5, 1e-5));

  // Backward: dx overwritten (prefilled with NaN), dw and db accumulated onto 1.0.
  auto dy = randn(n * oc, 13);
  std::vector<float> dx(n * ic, std::nanf("")), dw(ic * oc, 1.0f), db(oc, 1.0f);
  linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), n, ic, oc);
  std::vector<double> wdx(n * ic), wdw(ic * oc), wdb(oc);
  ref::linear_backward(x.data(), w.data(), dy.data(), n, ic, oc, wdx.data(), wdw.data(),
                       wdb.data());
  for (auto& v : wdw) v += 1.0;  // accumulated onto 1.0
  for (auto& v : wdb) v += 1.0;
  CHECK(all_close(dx.data(), wdx.data(), dx.size(), 1e-5, 1e-5));
  CHECK(all_close(dw.data(), wdw.data(), dw.size(), 1e-5, 1e-5));
  CHECK(all_close(db.data(), wdb.data(), db.size(), 1e-5, 1e-5));

  // dx == nullptr skips dx; db == nullptr skips db.
  std::vector<float> dw2(ic * oc, 0.0f);
  linear_backward(x.data(), w.data(), dy.data(), nullptr, dw2.data(), nullptr, n, ic, oc);
  for (std::size_t i = 0; i < dw2.size(); ++i)
    CHECK(dw2[i] == doctest::Approx(dw[i] - 1.0f).epsilon(1e-5));
}

TEST_CASE("linear backward agrees with finite differences") {
  const int n = 5, ic = 6, oc = 4;
  auto x = randn(n * ic, 20), w = randn(ic * oc, 21), b = randn(oc, 22);
  auto wy = randn(n * oc, 23);  // loss = sum(wy * y)
  std::vector<float> y(n * oc);
  auto loss = [&] {
    linear_forward(x.data(), w.data(), b.data(), y.data(), n, ic, oc);
    return zf::test::weighted_sum(y.data(), wy.data(), y.size());
  };
  std::vector<float> dx(n * ic), dw(ic * oc, 0.0f), db(oc, 0.0f);
  linear_backward(x.data(), w.data(), wy.data(), dx.data(), dw.data(), db.data(), n, ic, oc);
  zf::test::check_grad("dx", x.data(), x.size(), dx.data(), loss);
  zf::test::check_grad("dw", w.data(), w.size(), dw.data(), loss);
  zf::test::check_grad("db", b.data(), b.size(), db.data(), loss);
}
