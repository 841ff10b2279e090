#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/adamw.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::randn;
namespace ref = zf::test::ref;

namespace {

// Two AdamW steps from m = v = 0 against ref::adamw_step in double. Step 1 is the closed form
// p1 = p0 (1 - lr wd) - lr g1 / (|g1| + eps) (bias correction makes m/bc1 = g1, v/bc2 = g1^2).
void run_two_steps(const adamw_params& base, double b1, double b2, double gs) {
  const std::size_t n = 37;  // vector body + scalar tail
  auto p = randn(n, 1), g1 = randn(n, 2, 0.1f), g2 = randn(n, 3, 0.1f);
  g1[5] = 0.0f;  // zero gradient: the update is pure decay
  std::vector<float> p0 = p, m(n, 0.0f), v(n, 0.0f);
  adamw_params a = base;
  a.grad_scale = static_cast<float>(gs);
  a.step = 1;
  adamw_step(p.data(), g1.data(), m.data(), v.data(), n, a);
  std::vector<float> after1 = p;
  a.step = 2;
  adamw_step(p.data(), g2.data(), m.data(), v.data(), n, a);
  std::vector<double> wp(p0.begin(), p0.end()), wm(n, 0.0), wv(n, 0.0);
  ref::adamw_step(wp.data(), wm.data(), wv.data(), g1.data(), n, base.lr, b1, b2, base.eps,
                  base.weight_decay, 1, gs);
  const std::vector<double> wp1 = wp;
  ref::adamw_step(wp.data(), wm.data(), wv.data(), g2.data(), n, base.lr, b1, b2, base.eps,
                  base.weight_decay, 2, gs);
  for (std::size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(after1[i] == doctest::Approx(wp1[i]).epsilon(1e-6));
    const double lr = base.lr, wd = base.weight_decay, eps = base.eps, g = g1[i] * gs;
    CHECK(after1[i] ==
          doctest::Approx(p0[i] * (1 - lr * wd) - lr * g / (std::abs(g) + eps)).epsilon(1e-6));
    CHECK(p[i] == doctest::Approx(wp[i]).epsilon(1e-6));
    CHECK(m[i] == doctest::Approx(wm[i]).epsilon(1e-5));
    CHECK(v[i] == doctest::Approx(wv[i]).epsilon(1e-5));
  }
}

}  // namespace

TEST_CASE("adamw: two steps equal the closed form (decoupled decay, bias correction)") {
  adamw_params a;
  a.lr = 1e-2f;
  a.beta1 = 0.9f;
  a.beta2 = 0.95f;
  a.eps = 1e-8f;
  a.weight_decay = 0.1f;
  run_two_steps(a, 0.9, 0.95, 1.0);
  SUBCASE("gradient scale") {
    run_two_steps(a, 0.9, 0.95, 0.25);
  }
  SUBCASE("beta1 below 0.5 takes torch's other lerp form") {
    a.beta1 = 0.3f;
    run_two_steps(a, 0.3, 0.95, 1.0);
  }
  SUBCASE("no weight decay, large eps") {
    a.weight_decay = 0.0f;
    a.eps = 1e-3f;
    run_two_steps(a, 0.9, 0.95, 1.0);
  }
}

TEST_CASE("adamw step 1 moves every parameter by about lr against its gradient sign") {
  const std::size_t n = 1000;
  auto p = randn(n, 7), g = randn(n, 8);
  std::vector<float> p0 = p, m(n, 0.0f), v(n, 0.0f);
  adamw_params a;
  a.lr = 1e-3f;
  adamw_step(p.data(), g.data(), m.data(), v.data(), n, a);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(p[i] - p0[i] == doctest::Approx(g[i] > 0 ? -1e-3 : 1e-3).epsilon(1e-3));
  }
}

TEST_CASE("sum_squares accumulates in double") {
  const std::size_t n = 1000003;
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = 1.0f + static_cast<float>(i % 97) * 1e-3f;
  const double want = ref::sum_squares(x.data(), n);
  CHECK(sum_squares(x.data(), n) == doctest::Approx(want).epsilon(1e-12));
  CHECK(sum_squares(x.data(), 0) == 0.0);
  const float three[3] = {1.0f, -2.0f, 3.0f};
  CHECK(sum_squares(three, 3) == 14.0);
}
