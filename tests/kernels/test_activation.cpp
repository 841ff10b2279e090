#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/activation.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;
namespace ref = zf::test::ref;

TEST_CASE("gelu forward and backward match the tanh formula in double over a wide range") {
  const std::size_t n = 4001;  // not a multiple of 8: the tail path runs too
  std::vector<float> x(n), y(n), dx(n);
  std::vector<double> wy(n), wd(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = -12.0f + 24.0f * static_cast<float>(i) / (n - 1);
    wy[i] = ref::gelu(x[i]);
    wd[i] = ref::gelu_grad(x[i]);
  }
  gelu_forward(x.data(), y.data(), n);
  CHECK(all_close(y.data(), wy.data(), n, 2e-6, 1e-7));
  std::vector<float> ones(n, 1.0f);
  gelu_backward(x.data(), ones.data(), dx.data(), n);
  CHECK(all_close(dx.data(), wd.data(), n, 1e-5, 1e-7));
}

TEST_CASE("gelu is finite and saturates at extreme inputs") {
  std::vector<float> x = {-1e30f, -1e4f, -100.0f, -20.0f, 0.0f, 20.0f, 100.0f, 1e4f, 1e15f};
  std::vector<float> y(x.size()), d(x.size()), ones(x.size(), 1.0f);
  gelu_forward(x.data(), y.data(), x.size());
  gelu_backward(x.data(), ones.data(), d.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    CAPTURE(x[i]);
    CHECK(std::isfinite(y[i]));
    CHECK(std::isfinite(d[i]));
    if (x[i] <= -20.0f) {
      CHECK(std::abs(y[i]) < 1e-30f);
      CHECK(std::abs(d[i]) < 1e-30f);
    }
    if (x[i] >= 20.0f) {
      CHECK(y[i] == x[i]);
      CHECK(d[i] == 1.0f);
    }
  }
  CHECK(y[4] == 0.0f);
  CHECK(d[4] == 0.5f);
}

TEST_CASE("gelu works in place and its gradient agrees with finite differences") {
  const std::size_t n = 29;
  auto x = randn(n, 7, 2.0f);
  auto dy = randn(n, 8);
  std::vector<float> y(n), dx(n);
  gelu_forward(x.data(), y.data(), n);
  gelu_backward(x.data(), dy.data(), dx.data(), n);
  std::vector<float> inplace = x;
  gelu_forward(inplace.data(), inplace.data(), n);
  CHECK(inplace == y);
  std::vector<float> dinplace = dy;
  gelu_backward(x.data(), dinplace.data(), dinplace.data(), n);
  CHECK(dinplace == dx);
  auto loss = [&] {
    gelu_forward(x.data(), y.data(), n);
    return zf::test::weighted_sum(y.data(), dy.data(), n);
  };
  zf::test::check_grad("gelu dx", x.data(), n, dx.data(), loss, 1e-2f, 1e-2, 1e-4);
}

TEST_CASE("add_forward and accumulate, including aliasing") {
  const std::size_t n = 21;
  auto a = randn(n, 1), b = randn(n, 2);
  std::vector<float> y(n);
  add_forward(a.data(), b.data(), y.data(), n);
  for (std::size_t i = 0; i < n; ++i) CHECK(y[i] == a[i] + b[i]);
  std::vector<float> a2 = a;
  add_forward(a2.data(), b.data(), a2.data(), n);
  CHECK(a2 == y);
  std::vector<float> acc = a;
  accumulate(acc.data(), b.data(), n);
  CHECK(acc == y);
}

TEST_CASE("swiglu backward agrees with finite differences (vector lanes and tail)") {
  for (int m : {5, 16, 19}) {
    CAPTURE(m);
    const int n = 3;
    auto gu = randn(static_cast<std::size_t>(n) * 2 * m, 50 + m, 2.0f);
    auto dy = randn(static_cast<std::size_t>(n) * m, 60 + m);
    std::vector<float> y(static_cast<std::size_t>(n) * m);
    std::vector<float> dgu(gu.size(), std::nanf(""));  // overwritten, not accumulated
    swiglu_backward(gu.data(), dy.data(), dgu.data(), n, m);
    std::vector<double> want(gu.size());
    ref::swiglu_backward(gu.data(), dy.data(), want.data(), n, m);
    CHECK(all_close(dgu.data(), want.data(), dgu.size(), 1e-5, 1e-6));
    auto loss = [&] {
      swiglu_forward(gu.data(), y.data(), n, m);
      return zf::test::weighted_sum(y.data(), dy.data(), y.size());
    };
    zf::test::check_grad("swiglu dgu", gu.data(), gu.size(), dgu.data(), loss, 1e-2f, 1e-2, 1e-3);

    // In place: dgu may alias gu.
    std::vector<float> inplace = gu;
    swiglu_backward(inplace.data(), dy.data(), inplace.data(), n, m);
    CHECK(inplace == dgu);
  }
}

TEST_CASE("swiglu backward over a wide gate range: finite, saturating, matches double") {
  const int m = 4001, n = 1;  // not a multiple of 8
  std::vector<float> gu(2 * m), dy(m, 1.0f), dgu(2 * m);
  for (int j = 0; j < m; ++j) {
    gu[j] = -120.0f + 240.0f * static_cast<float>(j) / (m - 1);  // gate
    gu[m + j] = 1.0f + 0.001f * static_cast<float>(j);           // up
  }
  swiglu_backward(gu.data(), dy.data(), dgu.data(), n, m);
  std::vector<double> want(2 * m);
  ref::swiglu_backward(gu.data(), dy.data(), want.data(), n, m);
  CHECK(all_close(dgu.data(), want.data(), dgu.size(), 1e-5, 1e-30));
  // d up is exactly the forward's silu(gate) times dy = 1.
  std::vector<float> y(m), ones(m, 1.0f), gu1 = gu;
  std::copy(ones.begin(), ones.end(), gu1.begin() + m);
  swiglu_forward(gu1.data(), y.data(), n, m);
  CHECK(std::equal(y.begin(), y.end(), dgu.begin() + m));

  std::vector<float> x = {-1e30f, -1e4f, -90.0f, -80.5f, 0.0f, 20.0f, 110.0f, 1e4f, 1e30f};
  const int k = static_cast<int>(x.size());
  std::vector<float> g2(2 * k, 2.0f), d2(k, 1.0f), o2(2 * k);
  std::copy(x.begin(), x.end(), g2.begin());
  swiglu_backward(g2.data(), d2.data(), o2.data(), 1, k);
  for (int j = 0; j < k; ++j) {
    CAPTURE(x[j]);
    CHECK(std::isfinite(o2[j]));
    CHECK(std::isfinite(o2[k + j]));
    if (x[j] < -80.0f) CHECK(std::abs(o2[j]) < 1e-30f);
    if (x[j] >= 110.0f) CHECK(o2[j] == 2.0f);  // silu' = 1, times up = 2
  }
  CHECK(o2[4] == 1.0f);      // silu'(0) = 1/2, times up = 2
  CHECK(o2[k + 4] == 0.0f);  // silu(0) = 0
}
