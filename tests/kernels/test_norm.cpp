#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/norm.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;

namespace {

// Double-precision LayerNorm (biased variance, eps inside the sqrt).
void ref_layernorm(const float* x, const float* g, const float* b, int n, int c, double* y,
                   double* mean, double* rstd) {
  for (int r = 0; r < n; ++r) {
    double mu = 0.0, var = 0.0;
    for (int j = 0; j < c; ++j) mu += x[r * c + j];
    mu /= c;
    for (int j = 0; j < c; ++j) var += (x[r * c + j] - mu) * (x[r * c + j] - mu);
    var /= c;
    const double rs = 1.0 / std::sqrt(var + 1e-5);
    for (int j = 0; j < c; ++j) y[r * c + j] = (x[r * c + j] - mu) * rs * g[j] + b[j];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

}  // namespace

TEST_CASE("layernorm forward matches double precision, including offset rows and odd widths") {
  for (int c : {1, 7, 37, 64, 768}) {
    CAPTURE(c);
    const int n = 4;
    auto x = randn(n * c, 100 + c, 2.0f, 0.5f);
    for (int j = 0; j < c; ++j) x[3 * c + j] += 1000.0f;  // large mean: needs the two-pass variance
    auto g = randn(c, 200 + c, 0.5f, 1.0f), b = randn(c, 300 + c);
    std::vector<float> y(n * c, std::nanf("")), mean(n), rstd(n);
    layernorm_forward(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), n, c);
    std::vector<double> wy(n * c), wm(n), wr(n);
    ref_layernorm(x.data(), g.data(), b.data(), n, c, wy.data(), wm.data(), wr.data());
    CHECK(all_close(y.data(), wy.data(), y.size(), 1e-4, 2e-5));
    CHECK(all_close(mean.data(), wm.data(), n, 1e-6, 1e-6));
    CHECK(all_close(rstd.data(), wr.data(), n, 1e-5, 1e-6));
    // mean/rstd are optional (inference) and must give the same y.
    std::vector<float> y2(n * c);
    layernorm_forward(x.data(), g.data(), b.data(), y2.data(), nullptr, nullptr, n, c);
    CHECK(y2 == y);
  }
}

TEST_CASE("layernorm of a constant row is beta (variance 0, eps keeps rstd finite)") {
  const int c = 19;
  std::vector<float> x(c, 3.25f), g(c, 2.0f), b(c), y(c), mean(1), rstd(1);
  for (int j = 0; j < c; ++j) b[j] = static_cast<float>(j);
  layernorm_forward(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), 1, c);
  for (int j = 0; j < c; ++j) CHECK(y[j] == doctest::Approx(b[j]).epsilon(1e-6));
  CHECK(rstd[0] == doctest::Approx(1.0 / std::sqrt(1e-5)).epsilon(1e-5));
}

TEST_CASE("layernorm backward agrees with finite differences and accumulates") {
  for (int c : {13, 32}) {
    CAPTURE(c);
    const int n = 3;
    auto x = randn(n * c, 1 + c, 1.5f, 0.3f);
    auto g = randn(c, 2 + c, 0.5f, 1.0f), b = randn(c, 3 + c);
    auto wy = randn(n * c, 4 + c);  // loss = sum(wy * y): dy = wy
    std::vector<float> y(n * c), mean(n), rstd(n);
    auto loss = [&] {
      layernorm_forward(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), n, c);
      return zf::test::weighted_sum(y.data(), wy.data(), y.size());
    };
    loss();
    // Accumulation: start from known values and subtract them afterwards.
    std::vector<float> dx(n * c, 0.5f), dg(c, -1.0f), db(c, 2.0f);
    layernorm_backward(x.data(), g.data(), mean.data(), rstd.data(), wy.data(), dx.data(),
                       dg.data(), db.data(), n, c);
    for (auto& v : dx) v -= 0.5f;
    for (auto& v : dg) v += 1.0f;
    for (auto& v : db) v -= 2.0f;
    zf::test::check_grad("dx", x.data(), x.size(), dx.data(), loss, 1e-2f, 1e-2, 2e-3);
    zf::test::check_grad("dgamma", g.data(), g.size(), dg.data(), loss, 1e-2f, 1e-2, 2e-3);
    zf::test::check_grad("dbeta", b.data(), b.size(), db.data(), loss, 1e-2f, 1e-2, 2e-3);
  }
}
