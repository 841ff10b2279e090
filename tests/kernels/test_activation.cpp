#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/activation.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;

namespace {

// torch's GELU(approximate="tanh") and its derivative, in double.
double ref_gelu(double x) {
  const double k = std::sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}
double ref_gelu_grad(double x) {
  const double k = std::sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x);
  const double t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

}  // namespace

TEST_CASE("gelu forward and backward match the tanh formula in double over a wide range") {
  const std::size_t n = 4001;  // not a multiple of 8: the tail path runs too
  std::vector<float> x(n), y(n), dx(n);
  std::vector<double> wy(n), wd(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = -12.0f + 24.0f * static_cast<float>(i) / (n - 1);
    wy[i] = ref_gelu(x[i]);
    wd[i] = ref_gelu_grad(x[i]);
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
