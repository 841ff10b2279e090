// Rewards and advantages of runtime/rl/advantage.hpp against numbers worked out by hand (the
// arithmetic is in the comments), plus the errors each function raises on bad shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/rl/advantage.hpp"
#include "test_util.hpp"

namespace {

using zf::testing::contains;
using zf::testing::error_of;

void check_all(const std::vector<float>& got, const std::vector<double>& want, double eps = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(eps));
  }
}

}  // namespace

TEST_CASE("rl gae: gamma 1 lambda 0.95 on three tokens, terminal value 0") {
  const std::vector<float> r = {0.5f, -0.25f, 1.0f};
  const std::vector<float> v = {0.2f, 0.4f, 0.1f};
  std::vector<float> adv(3), ret(3);
  zf::rl::gae(r, v, 1.0, 0.95, adv, ret);
  // delta_2 = 1.0 + 0 - 0.1 = 0.9 (V_3 = 0)          A_2 = 0.9
  // delta_1 = -0.25 + 0.1 - 0.4 = -0.55              A_1 = -0.55 + 0.95 * 0.9 = 0.305
  // delta_0 = 0.5 + 0.4 - 0.2 = 0.7                  A_0 = 0.7 + 0.95 * 0.305 = 0.98975
  // returns = A + V = {1.18975, 0.705, 1.0}
  check_all(adv, {0.98975, 0.305, 0.9});
  check_all(ret, {1.18975, 0.705, 1.0});
}

TEST_CASE("rl gae: lambda 1 gives discounted Monte Carlo returns whatever the values") {
  const std::vector<float> r = {0.5f, -0.25f, 1.0f};
  const std::vector<float> v = {3.0f, -7.0f, 0.25f};
  std::vector<float> adv(3), ret(3);
  zf::rl::gae(r, v, 0.9, 1.0, adv, ret);
  // G_2 = 1.0, G_1 = -0.25 + 0.9 * 1.0 = 0.65, G_0 = 0.5 + 0.9 * 0.65 = 1.085; A = G - V.
  check_all(ret, {1.085, 0.65, 1.0});
  check_all(adv, {1.085 - 3.0, 0.65 + 7.0, 1.0 - 0.25});
}

TEST_CASE("rl gae: in place over the rewards and values buffers gives the same numbers") {
  std::vector<float> r = {0.5f, -0.25f, 1.0f};
  std::vector<float> v = {0.2f, 0.4f, 0.1f};
  zf::rl::gae(r, v, 1.0, 0.95, r, v);  // advantages over rewards, returns over values
  check_all(r, {0.98975, 0.305, 0.9});
  check_all(v, {1.18975, 0.705, 1.0});
}

TEST_CASE("rl gae: size mismatches name the array") {
  std::vector<float> r(3), v(2), a(3), ret(3);
  CHECK(contains(error_of([&] { zf::rl::gae(r, v, 1, 1, a, ret); }), "values has 2"));
  std::vector<float> v3(3), ret4(4);
  CHECK(contains(error_of([&] { zf::rl::gae(r, v3, 1, 1, a, ret4); }), "returns has 4"));
  std::vector<float> empty;
  zf::rl::gae(empty, empty, 1, 1, empty, empty);  // no tokens, nothing to do
}

TEST_CASE("rl shaped_rewards: KL penalty on every token, clipped score on the last") {
  const std::vector<float> lp = {-1.0f, -2.0f, -0.5f};
  const std::vector<float> ref = {-1.5f, -2.0f, -0.25f};
  std::vector<float> out(3);
  // logp - ref = {0.5, 0, -0.25}; -0.1 * that = {-0.05, 0, 0.025}.
  zf::rl::shaped_rewards(lp, ref, 7.0, 0.1, 5.0, out);
  check_all(out, {-0.05, 0.0, 0.025 + 5.0});  // clip(7, -5, 5) = 5
  zf::rl::shaped_rewards(lp, ref, -7.0, 0.1, 5.0, out);
  check_all(out, {-0.05, 0.0, 0.025 - 5.0});  // clip(-7, -5, 5) = -5
  zf::rl::shaped_rewards(lp, ref, 7.0, 0.1, 0.0, out);
  check_all(out, {-0.05, 0.0, 0.025 + 7.0});  // reward_clip 0: unclipped
  zf::rl::shaped_rewards(lp, ref, 3.0, 0.1, 5.0, out);
  check_all(out, {-0.05, 0.0, 0.025 + 3.0});  // inside the clip: unchanged
}

TEST_CASE("rl shaped_rewards: an empty response or mismatched sizes are errors") {
  std::vector<float> empty;
  CHECK(contains(error_of([&] { zf::rl::shaped_rewards(empty, empty, 1, 0.1, 0, empty); }),
                 "empty response"));
  std::vector<float> a(3), b(2), out(3);
  CHECK(
      contains(error_of([&] { zf::rl::shaped_rewards(a, b, 1, 0.1, 0, out); }), "ref_logp has 2"));
  CHECK(contains(error_of([&] { zf::rl::shaped_rewards(a, a, 1, 0.1, 0, b); }), "out has 2"));
}

TEST_CASE("rl group_advantages: unscaled is reward minus the group mean") {
  const std::vector<float> r = {1, 0, 0, 1, 2, 2, 2, 2, 3, 0, 0, 0};
  std::vector<float> out(12);
  zf::rl::group_advantages(r, 4, false, 1e-4, out);
  // means 0.5, 2, 0.75
  check_all(out, {0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 2.25, -0.75, -0.75, -0.75});
}

TEST_CASE("rl group_advantages: scaled by the unbiased std plus eps, equal rewards give 0") {
  const std::vector<float> r = {1, 0, 0, 1, 2, 2, 2, 2, 3, 0, 0, 0};
  std::vector<float> out(12);
  // Group 0: deviations +-0.5, sum of squares 1, unbiased var 1/3, std 0.5773503;
  //   0.5 / 0.5773503 = 0.8660254 (eps 0), 0.5 / (0.5773503 + 1e-4) = 0.8658754.
  // Group 1: all 2, deviations 0 -> 0 (not 0 / 0).
  // Group 2: deviations {2.25, -0.75 x3}, sum of squares 5.0625 + 3 * 0.5625 = 6.75,
  //   var 6.75 / 3 = 2.25, std 1.5 -> {1.5, -0.5 x3}; with eps 0.5: /2 -> {1.125, -0.375 x3}.
  zf::rl::group_advantages(r, 4, true, 0.0, out);
  check_all(out, {0.8660254, -0.8660254, -0.8660254, 0.8660254, 0, 0, 0, 0, 1.5, -0.5, -0.5, -0.5});
  zf::rl::group_advantages(r, 4, true, 1e-4, out);
  CHECK(out[0] == doctest::Approx(0.8658754).epsilon(1e-6));
  zf::rl::group_advantages(r, 4, true, 0.5, out);
  CHECK(out[8] == doctest::Approx(1.125));
  CHECK(out[9] == doctest::Approx(-0.375));
  for (float a : out) CHECK(std::isfinite(a));
}

TEST_CASE("rl group_advantages: group size 1 gives 0, shape errors") {
  const std::vector<float> r = {3, -1};
  std::vector<float> out = {9, 9};
  zf::rl::group_advantages(r, 1, true, 0.0, out);
  check_all(out, {0, 0});
  const std::vector<float> five(5);
  std::vector<float> out5(5), out4(4);
  CHECK(contains(error_of([&] { zf::rl::group_advantages(five, 2, true, 1e-4, out5); }),
                 "not a multiple of group_size 2"));
  CHECK(contains(error_of([&] { zf::rl::group_advantages(five, 0, true, 1e-4, out5); }),
                 "group_size must be >= 1"));
  CHECK(contains(error_of([&] { zf::rl::group_advantages(five, 5, true, 1e-4, out4); }),
                 "out has 4"));
  CHECK(contains(error_of([&] { zf::rl::group_advantages(five, 5, true, -1, out5); }),
                 "eps must be >= 0"));
}

TEST_CASE("rl rloo_advantages: leave-one-out baseline") {
  const std::vector<float> r = {1, 2, 6, 0, 0, 3};
  std::vector<float> out(6);
  zf::rl::rloo_advantages(r, 3, out);
  // Group {1, 2, 6}, sum 9: 1 - 8/2 = -3, 2 - 7/2 = -1.5, 6 - 3/2 = 4.5.
  // Group {0, 0, 3}, sum 3: 0 - 3/2 = -1.5 (twice), 3 - 0/2 = 3.
  check_all(out, {-3, -1.5, 4.5, -1.5, -1.5, 3});
  std::vector<float> out2(2);
  zf::rl::rloo_advantages(std::vector<float>{5, 1}, 2, out2);
  check_all(out2, {4, -4});  // G = 2: each against the other
}

TEST_CASE("rl rloo_advantages: one sample per group or a ragged batch is an error") {
  const std::vector<float> r = {1, 2, 6};
  std::vector<float> out(3);
  CHECK(contains(error_of([&] { zf::rl::rloo_advantages(r, 1, out); }), "group_size must be >= 2"));
  CHECK(contains(error_of([&] { zf::rl::rloo_advantages(r, 2, out); }),
                 "not a multiple of group_size 2"));
}

TEST_CASE("rl whiten: zero mean and unit biased variance, or the mean kept") {
  std::vector<float> x = {1, 2, 3, 6};
  // mean 3, deviations {-2, -1, 0, 3}, sum of squares 14, biased var 14 / 4 = 3.5,
  // std sqrt(3.5 + 1e-8) = 1.8708287 -> {-1.0690450, -0.5345225, 0, 1.6035674}.
  zf::rl::whiten(x, true);
  check_all(x, {-1.0690450, -0.5345225, 0.0, 1.6035674});
  double sum = 0, ss = 0;
  for (float v : x) sum += v, ss += double(v) * v;
  CHECK(sum == doctest::Approx(0.0));
  CHECK(ss / 4 == doctest::Approx(1.0).epsilon(1e-6));

  std::vector<float> y = {1, 2, 3, 6};
  zf::rl::whiten(y, false);  // the same plus the mean 3
  check_all(y, {3 - 1.0690450, 3 - 0.5345225, 3.0, 3 + 1.6035674});

  std::vector<float> flat = {5, 5};  // no spread: 0 / sqrt(1e-8) = 0, no NaN
  zf::rl::whiten(flat, true);
  check_all(flat, {0, 0});
  std::vector<float> flat_kept = {5, 5};
  zf::rl::whiten(flat_kept, false);
  check_all(flat_kept, {5, 5});
  std::vector<float> empty;
  zf::rl::whiten(empty, true);
}

TEST_CASE("rl sequence_kl: sum of logp - ref_logp") {
  const std::vector<float> lp = {-1.0f, -2.0f, -0.5f};
  const std::vector<float> ref = {-1.5f, -2.0f, -0.25f};
  CHECK(zf::rl::sequence_kl(lp, ref) == doctest::Approx(0.5 + 0.0 - 0.25));
  CHECK(zf::rl::sequence_kl({}, {}) == 0.0);
  const std::vector<float> two = {0, 0};
  CHECK(contains(error_of([&] { zf::rl::sequence_kl(lp, two); }), "ref_logp has 2"));
}

TEST_CASE("rl broadcast_to_tokens: one value per response over its tokens") {
  const std::vector<float> per_seq = {0.5f, -1.0f, 2.0f};
  const std::vector<int> len = {2, 0, 3};
  std::vector<float> out(5);
  zf::rl::broadcast_to_tokens(per_seq, len, out);
  check_all(out, {0.5, 0.5, 2, 2, 2});
  std::vector<float> out4(4);
  CHECK(contains(error_of([&] { zf::rl::broadcast_to_tokens(per_seq, len, out4); }),
                 "out has 4 values, the sum of seq_len is 5"));
  const std::vector<int> bad = {2, -1, 3};
  CHECK(contains(error_of([&] { zf::rl::broadcast_to_tokens(per_seq, bad, out); }),
                 "seq_len[1] is -1"));
}
