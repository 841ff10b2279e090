#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/norm.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;
namespace ref = zf::test::ref;

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
    ref::layernorm(x.data(), g.data(), b.data(), n, c, wy.data(), wm.data(), wr.data());
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

TEST_CASE("rmsnorm forward with saved rstd: y bit-identical to the inference form") {
  for (int c : {1, 7, 16, 37, 768}) {
    CAPTURE(c);
    const int n = 4;
    auto x = randn(n * c, 500 + c, 2.0f, 0.5f);
    for (int j = 0; j < c; ++j) x[3 * c + j] *= 1000.0f;  // scale must not matter to the result
    auto g = randn(c, 600 + c, 0.5f, 1.0f);
    std::vector<float> y(n * c, std::nanf("")), y0(n * c, std::nanf("")), rstd(n, std::nanf(""));
    rmsnorm_forward(x.data(), g.data(), y.data(), rstd.data(), n, c, 1e-5f);
    rmsnorm_forward(x.data(), g.data(), y0.data(), n, c, 1e-5f);
    CHECK(y == y0);
    std::vector<float> y1(n * c);
    rmsnorm_forward(x.data(), g.data(), y1.data(), nullptr, n, c, 1e-5f);
    CHECK(y1 == y0);
    std::vector<float> dy(n * c);
    std::vector<double> wy(n * c), wr(n), wdx(n * c), wdg(c);
    ref::rmsnorm(x.data(), g.data(), dy.data(), n, c, 1e-5, wy.data(), wr.data(), wdx.data(),
                 wdg.data());
    CHECK(all_close(y.data(), wy.data(), y.size(), 1e-5, 1e-6));
    CHECK(all_close(rstd.data(), wr.data(), n, 1e-5, 0.0));
  }
}

TEST_CASE("rmsnorm backward agrees with finite differences and the closed form, and accumulates") {
  for (int c : {13, 32, 37}) {  // scalar tail only, vector lanes only, both
    CAPTURE(c);
    const int n = 3;
    auto x = randn(n * c, 7 + c, 1.5f, 0.3f);
    auto g = randn(c, 8 + c, 0.5f, 1.0f);
    auto wy = randn(n * c, 9 + c);  // loss = sum(wy * y): dy = wy
    std::vector<float> y(n * c), rstd(n);
    auto loss = [&] {
      rmsnorm_forward(x.data(), g.data(), y.data(), rstd.data(), n, c, 1e-5f);
      return zf::test::weighted_sum(y.data(), wy.data(), y.size());
    };
    loss();
    // Accumulation: start from known values and subtract them afterwards.
    std::vector<float> dx(n * c, 0.5f), dg(c, -1.0f);
    rmsnorm_backward(x.data(), g.data(), rstd.data(), wy.data(), dx.data(), dg.data(), n, c);
    for (auto& v : dx) v -= 0.5f;
    for (auto& v : dg) v += 1.0f;
    std::vector<double> ry(n * c), rr(n), rdx(n * c), rdg(c);
    ref::rmsnorm(x.data(), g.data(), wy.data(), n, c, 1e-5, ry.data(), rr.data(), rdx.data(),
                 rdg.data());
    CHECK(all_close(dx.data(), rdx.data(), dx.size(), 1e-4, 1e-5));
    CHECK(all_close(dg.data(), rdg.data(), dg.size(), 1e-4, 1e-5));
    zf::test::check_grad("dx", x.data(), x.size(), dx.data(), loss, 1e-2f, 1e-2, 2e-3);
    zf::test::check_grad("dgamma", g.data(), g.size(), dg.data(), loss, 1e-2f, 1e-2, 2e-3);

    // A second call adds the same gradient again (dx is the residual stream's, += semantics);
    // 1e-6 absolute covers the rounding of the 0.5 / -1 offsets above.
    std::vector<float> dx2 = dx, dg2 = dg;
    rmsnorm_backward(x.data(), g.data(), rstd.data(), wy.data(), dx2.data(), dg2.data(), n, c);
    int not_doubled = 0;
    for (std::size_t i = 0; i < dx.size(); ++i) {
      not_doubled += !(std::abs(dx2[i] - 2 * dx[i]) < 1e-6f);
    }
    for (int j = 0; j < c; ++j) not_doubled += !(std::abs(dg2[j] - 2 * dg[j]) < 1e-6f);
    CHECK(not_doubled == 0);
  }
}

TEST_CASE("rmsnorm backward is scale invariant in x (large and small rows)") {
  // dx scales as 1/k when x scales by k (up to eps), so the r^3 term meets large and small
  // magnitudes; compared with the double closed form relative to the largest |dx|.
  const int n = 2, c = 40;
  for (float k : {1e-2f, 1e3f}) {
    CAPTURE(k);
    auto x = randn(n * c, 41, 1.0f);
    for (auto& v : x) v *= k;
    auto g = randn(c, 42, 0.5f, 1.0f), dy = randn(n * c, 43);
    std::vector<float> y(n * c), rstd(n), dx(n * c, 0.0f), dg(c, 0.0f);
    rmsnorm_forward(x.data(), g.data(), y.data(), rstd.data(), n, c, 1e-6f);
    rmsnorm_backward(x.data(), g.data(), rstd.data(), dy.data(), dx.data(), dg.data(), n, c);
    std::vector<double> ry(n * c), rr(n), rdx(n * c), rdg(c);
    ref::rmsnorm(x.data(), g.data(), dy.data(), n, c, 1e-6, ry.data(), rr.data(), rdx.data(),
                 rdg.data());
    double mx = 0.0;
    for (double v : rdx) mx = std::max(mx, std::abs(v));
    CHECK(all_close(dx.data(), rdx.data(), dx.size(), 1e-4, 1e-5 * mx));
    CHECK(all_close(dg.data(), rdg.data(), dg.size(), 1e-4, 1e-5));
  }
}
