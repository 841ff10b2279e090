#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/softmax.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;
namespace ref = zf::test::ref;

TEST_CASE("softmax_xent forward and fused match double precision at vocab 50257") {
  const int n = 3, v = 50257;
  auto logits = randn(static_cast<std::size_t>(n) * v, 42, 3.0f);
  logits[v + 7] += 30.0f;       // a confident row
  logits[2 * v + 11] -= 60.0f;  // row 2's target is very unlikely: large loss
  for (int j = 0; j < v; ++j) logits[2 * v + j] += 500.0f;  // large offset: needs the max shift
  const std::vector<int> targets = {123, 7, 11};
  std::vector<float> loss(n, std::nanf("")), loss2(n, std::nanf(""));
  softmax_xent_forward(logits.data(), targets.data(), loss.data(), n, v);
  const float dloss = 0.25f;
  std::vector<float> g = logits;
  softmax_xent_fused(g.data(), targets.data(), loss2.data(), n, v, dloss);
  for (int r = 0; r < n; ++r) {
    CAPTURE(r);
    std::vector<double> p;
    const double want = ref::xent(logits.data() + r * v, v, targets[r], &p);
    CHECK(loss[r] == doctest::Approx(want).epsilon(2e-6));
    CHECK(loss2[r] == loss[r]);
    for (auto& x : p) x *= dloss;
    p[targets[r]] -= dloss;
    // (p - 1) at a confident target carries float cancellation (torch has it too): atol ~ ulp(1).
    CHECK(all_close(g.data() + r * v, p.data(), v, 1e-5, 3e-8));
  }
}

TEST_CASE("softmax_xent ignores rows with a negative target") {
  const int n = 3, v = 37;
  auto logits = randn(n * v, 5);
  const std::vector<int> targets = {-1, 4, -100};
  std::vector<float> loss(n, std::nanf("")), loss2(n, std::nanf(""));
  softmax_xent_forward(logits.data(), targets.data(), loss.data(), n, v);
  std::vector<float> g = logits;
  softmax_xent_fused(g.data(), targets.data(), loss2.data(), n, v, 1.0f);
  CHECK(loss[0] == 0.0f);
  CHECK(loss[2] == 0.0f);
  CHECK(loss2[0] == 0.0f);
  CHECK(loss2[2] == 0.0f);
  CHECK(loss[1] > 0.0f);
  CHECK(loss2[1] == loss[1]);
  for (int j = 0; j < v; ++j) {
    CHECK(g[j] == 0.0f);
    CHECK(g[2 * v + j] == 0.0f);
  }
  double row_sum = 0.0;  // a live row's gradient sums to 0: softmax sums to 1
  for (int j = 0; j < v; ++j) row_sum += g[v + j];
  CHECK(std::abs(row_sum) < 1e-6);
}

TEST_CASE("softmax_xent_fused gradient agrees with finite differences") {
  const int n = 2, v = 21;  // not a multiple of 16: the tail path runs
  auto logits = randn(n * v, 9, 2.0f);
  const std::vector<int> targets = {3, 20};
  const float dloss = 0.5f;
  std::vector<float> loss(n);
  auto total = [&] {
    softmax_xent_forward(logits.data(), targets.data(), loss.data(), n, v);
    return dloss * (static_cast<double>(loss[0]) + loss[1]);
  };
  std::vector<float> g = logits;
  softmax_xent_fused(g.data(), targets.data(), loss.data(), n, v, dloss);
  zf::test::check_grad("dlogits", logits.data(), logits.size(), g.data(), total, 1e-2f, 1e-2, 2e-4);
}

TEST_CASE("softmax_rows: scale, sums to one, -inf gives exactly 0") {
  const int n = 3, v = 45;
  auto x = randn(n * v, 77, 4.0f);
  x[5] = -INFINITY;
  x[v + 44] = -INFINITY;
  std::vector<float> y = x;
  softmax_rows(y.data(), n, v, 0.5f);
  for (int r = 0; r < n; ++r) {
    std::vector<double> want(v);
    ref::softmax_rows(x.data() + r * v, 1, v, 0.5, want.data());
    CHECK(all_close(y.data() + r * v, want.data(), v, 2e-6, 1e-12));
  }
  CHECK(y[5] == 0.0f);
  CHECK(y[v + 44] == 0.0f);
  // Negative scale flips the order; the max is taken after scaling.
  std::vector<float> big = {1000.0f, -1000.0f, 0.0f};
  softmax_rows(big.data(), 1, 3, -1.0f);
  CHECK(big[0] == 0.0f);
  CHECK(big[1] == 1.0f);
  CHECK(big[2] == 0.0f);
}

TEST_CASE("softmax's exp is accurate to about an ulp across its range") {
  // A row [x, 0] has max 0 and softmax[0] = e^x / (1 + e^x); for x < -17 the float result is
  // e^x itself, so this checks the vectorised exp directly (torch's Sleef expf is 1 ulp).
  const int n = 4000;
  std::vector<float> rows(2 * n);
  for (int r = 0; r < n; ++r) {
    rows[2 * r] = -87.0f + 87.0f * static_cast<float>(r) / n;
    rows[2 * r + 1] = 0.0f;
  }
  std::vector<float> p = rows;
  softmax_rows(p.data(), n, 2);
  int bad = 0;
  for (int r = 0; r < n; ++r) {
    const double e = std::exp(static_cast<double>(rows[2 * r]));
    const double want = e / (1.0 + e);
    if (std::abs(p[2 * r] - want) > 3e-7 * want) {
      if (bad++ < 3) MESSAGE("x " << rows[2 * r] << ": got " << p[2 * r] << " want " << want);
    }
  }
  CHECK(bad == 0);
}
