// KL estimators, loss aggregation, truncated importance weights, the clipped policy loss and the
// clipped value loss of runtime/rl/objective.hpp: values worked out by hand (arithmetic in the
// comments) and every gradient against a central finite difference of the loss itself.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/rl/objective.hpp"
#include "test_util.hpp"

namespace {

using zf::testing::contains;
using zf::testing::error_of;
namespace rl = zf::rl;

void check_all(const std::vector<float>& got, const std::vector<double>& want, double eps = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(eps));
  }
}

// One batch of two responses (seq_len {2, 3}) whose five tokens cover every branch of the clip
// at clip 0.2 (range [0.8, 1.2]). logp - old_logp is dyadic so the floats hold it exactly:
//   token  A     logp-old  ratio                      branch
//   0      1     0.125     e^0.125  = 1.1331485       inside          pg -1.1331485  d -1.1331485
//   1      2     0.375     e^0.375  = 1.4549914       A>0 above: clip pg -2.4         d 0
//   2      0.5  -0.5       e^-0.5   = 0.6065307       A>0 below       pg -0.3032653  d -0.3032653
//   3     -1     0.375     1.4549914                  A<0 above       pg  1.4549914  d  1.4549914
//   4     -2    -0.5       0.6065307                  A<0 below: clip pg  1.6         d 0
struct batch {
  std::vector<float> old_logp = {-1.0f, -2.0f, -1.5f, -0.5f, -1.25f};
  std::vector<float> logp = {-0.875f, -1.625f, -2.0f, -0.125f, -1.75f};
  std::vector<float> adv = {1.0f, 2.0f, 0.5f, -1.0f, -2.0f};
  std::vector<float> ref;
  std::vector<float> behav;
  std::vector<int> seq_len = {2, 3};
  rl::policy_loss_input input() const { return {logp, old_logp, behav, ref, adv, seq_len}; }
};

// d loss / d logp[i] by a central difference; h = 2^-10 keeps logp +- h exact in float, and
// every token of the batches below sits further than h from a clip boundary.
void check_policy_grad_by_fd(batch b, const rl::policy_loss_options& o) {
  const rl::policy_loss_result r = rl::policy_loss(b.input(), o);
  const float h = 1.0f / 1024;
  for (std::size_t i = 0; i < b.logp.size(); ++i) {
    CAPTURE(i);
    const float x = b.logp[i];
    b.logp[i] = x + h;
    const double up = rl::policy_loss(b.input(), o).loss;
    b.logp[i] = x - h;
    const double down = rl::policy_loss(b.input(), o).loss;
    b.logp[i] = x;
    CHECK(r.dlogp[i] == doctest::Approx((up - down) / (2.0 * h)).epsilon(1e-5));
  }
}

}  // namespace

TEST_CASE("rl kl_estimate: k1, k2, k3 values and derivatives by hand") {
  // logp -1, ref -1.5: d = logp - ref = 0.5.
  auto k1 = rl::kl_estimate(rl::kl_kind::k1, -1.0, -1.5);
  CHECK(k1.value == doctest::Approx(0.5));
  CHECK(k1.dlogp == doctest::Approx(1.0));
  auto k2 = rl::kl_estimate(rl::kl_kind::k2, -1.0, -1.5);
  CHECK(k2.value == doctest::Approx(0.125));  // 0.5 * 0.5^2
  CHECK(k2.dlogp == doctest::Approx(0.5));
  auto k3 = rl::kl_estimate(rl::kl_kind::k3, -1.0, -1.5);
  // exp(-0.5) - (-0.5) - 1 = 0.6065307 + 0.5 - 1 = 0.1065307; d = 1 - 0.6065307.
  CHECK(k3.value == doctest::Approx(0.1065307).epsilon(1e-6));
  CHECK(k3.dlogp == doctest::Approx(0.3934693).epsilon(1e-6));
  // logp -2, ref -1: d = -1. k1 -1 (negative: k1 is unbiased, not a distance);
  // k3 = e - 1 - 1 = 0.7182818, d = 1 - e = -1.7182818.
  CHECK(rl::kl_estimate(rl::kl_kind::k1, -2, -1).value == doctest::Approx(-1.0));
  CHECK(rl::kl_estimate(rl::kl_kind::k2, -2, -1).value == doctest::Approx(0.5));
  CHECK(rl::kl_estimate(rl::kl_kind::k2, -2, -1).dlogp == doctest::Approx(-1.0));
  CHECK(rl::kl_estimate(rl::kl_kind::k3, -2, -1).value == doctest::Approx(0.7182818).epsilon(1e-6));
  CHECK(rl::kl_estimate(rl::kl_kind::k3, -2, -1).dlogp ==
        doctest::Approx(-1.7182818).epsilon(1e-6));
  // Equal policies: k2 and k3 are 0 with a flat minimum.
  CHECK(rl::kl_estimate(rl::kl_kind::k3, -0.7, -0.7).value == 0.0);
  CHECK(rl::kl_estimate(rl::kl_kind::k3, -0.7, -0.7).dlogp == 0.0);
  // Tiny d: k3 ~ d^2 / 2 with its digits (exp(-d) - 1 + d would cancel them away).
  CHECK(rl::kl_estimate(rl::kl_kind::k3, 1e-6, 0).value == doctest::Approx(5e-13).epsilon(1e-5));
}

TEST_CASE("rl kl_estimate: derivative matches a central finite difference") {
  const double h = 1e-5;
  for (auto k : {rl::kl_kind::k1, rl::kl_kind::k2, rl::kl_kind::k3}) {
    for (double lp : {-3.0, -1.2, -0.4, 0.0}) {
      for (double ref : {-2.5, -1.0, -0.1}) {
        CAPTURE(rl::to_string(k));
        CAPTURE(lp);
        CAPTURE(ref);
        const double fd =
            (rl::kl_estimate(k, lp + h, ref).value - rl::kl_estimate(k, lp - h, ref).value) /
            (2 * h);
        CHECK(rl::kl_estimate(k, lp, ref).dlogp == doctest::Approx(fd).epsilon(1e-7));
      }
    }
  }
}

TEST_CASE("rl kl_kind and loss_agg: parse, round trip, errors name the allowed values") {
  for (auto k : {rl::kl_kind::k1, rl::kl_kind::k2, rl::kl_kind::k3})
    CHECK(rl::parse_kl_kind(rl::to_string(k)) == k);
  CHECK(rl::parse_kl_kind("k3") == rl::kl_kind::k3);
  CHECK(contains(error_of([] { rl::parse_kl_kind("K3"); }), "'K3': expected k1, k2 or k3"));
  for (auto a : {rl::loss_agg::seq_mean_token_mean, rl::loss_agg::token_mean,
                 rl::loss_agg::seq_mean_token_sum_norm})
    CHECK(rl::parse_loss_agg(rl::to_string(a)) == a);
  CHECK(rl::parse_loss_agg("token_mean") == rl::loss_agg::token_mean);
  CHECK(contains(error_of([] { rl::parse_loss_agg("token-mean"); }),
                 "expected seq_mean_token_mean, token_mean or seq_mean_token_sum_norm"));
}

TEST_CASE("rl aggregation_weights: the three modes on seq_len {2, 3}") {
  const std::vector<int> len = {2, 3};  // S = 2, N = 5
  std::vector<float> w(5);
  rl::aggregation_weights(len, rl::loss_agg::seq_mean_token_mean, 0, w);
  check_all(w, {1.0 / 4, 1.0 / 4, 1.0 / 6, 1.0 / 6, 1.0 / 6});  // 1 / (S len_s)
  rl::aggregation_weights(len, rl::loss_agg::token_mean, 0, w);
  check_all(w, {0.2, 0.2, 0.2, 0.2, 0.2});  // 1 / N
  rl::aggregation_weights(len, rl::loss_agg::seq_mean_token_sum_norm, 4, w);
  check_all(w, {0.125, 0.125, 0.125, 0.125, 0.125});  // 1 / (S norm_len) = 1 / 8
}

TEST_CASE("rl aggregation_weights: empty responses add no token and do not count in S") {
  const std::vector<int> len = {2, 0, 3, 0};  // still S = 2 non-empty, N = 5
  std::vector<float> w(5);
  rl::aggregation_weights(len, rl::loss_agg::seq_mean_token_mean, 0, w);
  check_all(w, {1.0 / 4, 1.0 / 4, 1.0 / 6, 1.0 / 6, 1.0 / 6});
  rl::aggregation_weights(len, rl::loss_agg::seq_mean_token_sum_norm, 4, w);
  check_all(w, {0.125, 0.125, 0.125, 0.125, 0.125});
  std::vector<float> none;
  rl::aggregation_weights(std::vector<int>{0, 0}, rl::loss_agg::seq_mean_token_mean, 0, none);
  rl::aggregation_weights({}, rl::loss_agg::token_mean, 0, none);
}

TEST_CASE("rl aggregation_weights: errors") {
  const std::vector<int> len = {2, 3};
  std::vector<float> w(5), w4(4);
  CHECK(contains(
      error_of([&] { rl::aggregation_weights(len, rl::loss_agg::seq_mean_token_sum_norm, 0, w); }),
      "needs norm_len > 0"));
  CHECK(contains(error_of([&] { rl::aggregation_weights(len, rl::loss_agg::token_mean, 0, w4); }),
                 "out has 4 values, the sum of seq_len is 5"));
  const std::vector<int> bad = {2, -3};
  CHECK(contains(error_of([&] { rl::aggregation_weights(bad, rl::loss_agg::token_mean, 0, w); }),
                 "seq_len[1] is -3"));
}

TEST_CASE("rl truncated_is_weight: exp(old - behav) capped, off at cap <= 0") {
  CHECK(rl::truncated_is_weight(-1.0, -1.5, 2.0) == doctest::Approx(1.6487213));  // e^0.5
  CHECK(rl::truncated_is_weight(-1.0, -1.5, 1.5) == 1.5);  // e^0.5 > 1.5: capped
  CHECK(rl::truncated_is_weight(-1.0, -3.0, 2.0) == 2.0);  // e^2 capped
  CHECK(rl::truncated_is_weight(-2.0, -1.0, 2.0) == doctest::Approx(0.3678794));  // e^-1
  CHECK(rl::truncated_is_weight(-1.0, -3.0, 0.0) == 1.0);                         // off
  CHECK(rl::truncated_is_weight(-1.0, -3.0, -1.0) == 1.0);                        // off
}

TEST_CASE("rl policy_loss: every clip branch, seq_mean_token_mean") {
  const batch b;
  const auto r = rl::policy_loss(b.input(), {});
  // c = {1/4, 1/4, 1/6, 1/6, 1/6}
  // pg_loss = (-1.1331485 - 2.4) / 4 + (-0.3032653 + 1.4549914 + 1.6) / 6
  //         = -0.8832871 + 0.4586210 = -0.4246661
  CHECK(r.pg_loss == doctest::Approx(-0.4246661).epsilon(1e-6));
  CHECK(r.loss == doctest::Approx(-0.4246661).epsilon(1e-6));
  CHECK(r.kl_loss == 0.0);
  CHECK(r.kl_mean == 0.0);
  // dlogp = c d: {-1.1331485 / 4, 0, -0.3032653 / 6, 1.4549914 / 6, 0}
  check_all(r.dlogp, {-0.2832871, 0, -0.0505442, 0.2424986, 0});
  CHECK(r.clip_frac == doctest::Approx(0.4));  // tokens 1 and 4
  CHECK(r.ratio_max == doctest::Approx(1.4549914));
  CHECK(r.is_weight_mean == doctest::Approx(1.0));  // no behav_logp: behav = old
  check_policy_grad_by_fd(b, {});
}

TEST_CASE("rl policy_loss: ratio 1 or zero advantage take the unclipped branch") {
  batch b;
  b.logp = b.old_logp;  // ratio 1 everywhere: the clip is inactive
  const auto r = rl::policy_loss(b.input(), {});
  // pg = -A, d = -A c: {-1/4, -2/4, -0.5/6, 1/6, 2/6}; loss = -(1 + 2) / 4 - (0.5 - 3) / 6
  check_all(r.dlogp, {-0.25, -0.5, -0.5 / 6, 1.0 / 6, 2.0 / 6});
  CHECK(r.loss == doctest::Approx(-0.75 + 2.5 / 6));
  CHECK(r.clip_frac == 0.0);
  CHECK(r.ratio_max == 1.0);
  batch z;
  z.adv = {0, 0, 0, 0, 0};
  const auto rz = rl::policy_loss(z.input(), {});
  CHECK(rz.loss == 0.0);
  CHECK(rz.clip_frac == 0.0);  // a tie at 0 is not counted as clipped
  check_all(rz.dlogp, {0, 0, 0, 0, 0});
}

TEST_CASE("rl policy_loss: DAPO's higher upper clip and token_mean") {
  const batch b;
  rl::policy_loss_options o;
  o.clip_high = 0.5;  // range [0.8, 1.5]: token 1 (ratio 1.4549914, A 2) is now inside
  o.agg = rl::loss_agg::token_mean;
  const auto r = rl::policy_loss(b.input(), o);
  // pg1 = -2 * 1.4549914 = -2.9099828; token 4 (A < 0 below 0.8) is still clipped.
  // loss = (-1.1331485 - 2.9099828 - 0.3032653 + 1.4549914 + 1.6) / 5 = -0.2582810
  CHECK(r.loss == doctest::Approx(-0.2582810).epsilon(1e-6));
  check_all(r.dlogp, {-0.2266297, -0.5819966, -0.0606531, 0.2909983, 0});
  CHECK(r.clip_frac == doctest::Approx(0.2));
  o.clip_low = 0.45;  // range [0.55, 1.5]: token 4 (ratio 0.6065307) inside too
  const auto r2 = rl::policy_loss(b.input(), o);
  CHECK(r2.clip_frac == 0.0);
  CHECK(r2.dlogp[4] == doctest::Approx(2 * 0.6065307 / 5).epsilon(1e-6));  // -A ratio c
  check_policy_grad_by_fd(b, o);
}

TEST_CASE("rl policy_loss: Dr. GRPO's constant normaliser") {
  const batch b;
  rl::policy_loss_options o;
  o.agg = rl::loss_agg::seq_mean_token_sum_norm;
  o.norm_len = 4;  // c = 1 / (2 * 4) on every token
  const auto r = rl::policy_loss(b.input(), o);
  // (-1.1331485 - 2.4 - 0.3032653 + 1.4549914 + 1.6) / 8 = -0.7814224 / 8
  CHECK(r.loss == doctest::Approx(-0.7814224 / 8).epsilon(1e-6));
  check_all(r.dlogp, {-1.1331485 / 8, 0, -0.3032653 / 8, 1.4549914 / 8, 0});
  check_policy_grad_by_fd(b, o);
}

TEST_CASE("rl policy_loss: k3 KL term in the loss") {
  batch b;
  b.ref = {-1.0f, -1.625f, -1.5f, -0.625f, -1.75f};
  rl::policy_loss_options o;
  o.kl_coef = 0.1;
  const auto r = rl::policy_loss(b.input(), o);
  // d = logp - ref = {0.125, 0, -0.5, 0.5, 0}; k3 = exp(-d) + d - 1, dk = 1 - exp(-d):
  //   {0.0074969, 0, 0.1487213, 0.1065307, 0}, dk {0.1175031, 0, -0.6487213, 0.3934693, 0}
  // kl_mean = 0.2627488 / 5 = 0.0525498
  // kl_loss = 0.1 (0.0074969 / 4 + (0.1487213 + 0.1065307) / 6) = 0.0044416
  CHECK(r.kl_mean == doctest::Approx(0.0525498).epsilon(1e-6));
  CHECK(r.kl_loss == doctest::Approx(0.0044416).epsilon(1e-6));
  CHECK(r.pg_loss == doctest::Approx(-0.4246661).epsilon(1e-6));  // unchanged by the KL
  CHECK(r.loss == doctest::Approx(-0.4246661 + 0.0044416).epsilon(1e-6));
  // dlogp = c (dpg + 0.1 dk): token 0: (-1.1331485 + 0.0117503) / 4 = -0.2803495;
  // token 2: (-0.3032653 - 0.0648721) / 6 = -0.0613562; token 3: (1.4549914 + 0.0393469) / 6
  // = 0.2490564; tokens 1 and 4: clipped (dpg 0) and d = 0 (dk 0).
  check_all(r.dlogp, {-0.2803495, 0, -0.0613562, 0.2490564, 0});
  check_policy_grad_by_fd(b, o);
  // A KL gradient on a clipped token: move the reference so token 1 has d = 0.25.
  b.ref[1] = -1.875f;
  const auto r1 = rl::policy_loss(b.input(), o);
  CHECK(r1.dlogp[1] == doctest::Approx(0.25 * 0.1 * (1 - std::exp(-0.25))).epsilon(1e-6));
  // ref given with kl_coef 0: the estimator is still reported, the loss ignores it.
  o.kl_coef = 0;
  const auto r0 = rl::policy_loss(b.input(), o);
  CHECK(r0.kl_loss == 0.0);
  // (0.2627488 + k3(0.25) = exp(-0.25) + 0.25 - 1 = 0.0288008) / 5 = 0.0583099
  CHECK(r0.kl_mean == doctest::Approx(0.0583099).epsilon(1e-6));
  CHECK(r0.loss == doctest::Approx(-0.4246661).epsilon(1e-6));
}

TEST_CASE("rl policy_loss: k1 and k2 KL terms by finite differences") {
  batch b;
  b.ref = {-1.0f, -1.625f, -1.5f, -0.625f, -1.75f};
  for (auto k : {rl::kl_kind::k1, rl::kl_kind::k2, rl::kl_kind::k3}) {
    CAPTURE(rl::to_string(k));
    rl::policy_loss_options o;
    o.kl_coef = 0.3;
    o.kl = k;
    check_policy_grad_by_fd(b, o);
  }
}

TEST_CASE("rl policy_loss: truncated importance weights from the rollout engine") {
  batch b;
  b.behav = {-1.25f, -2.0f, -0.5f, -0.5f, -2.25f};
  // old - behav = {0.25, 0, -1, 0, 1}: w = {e^0.25 = 1.2840254, 1, e^-1 = 0.3678794, 1,
  // min(e, 2) = 2}; mean 5.6519049 / 5 = 1.1303810.
  const auto r = rl::policy_loss(b.input(), {});
  CHECK(r.is_weight_mean == doctest::Approx(1.1303810).epsilon(1e-6));
  // pg scales by w: token 0: -e^0.125 e^0.25 = -e^0.375 = -1.4549914; token 2: -0.5 e^-1.5 =
  // -0.1115651; token 4 clipped: -2 * 0.8 * -2 = 3.2.
  // loss = (-1.4549914 - 2.4) / 4 + (-0.1115651 + 1.4549914 + 3.2) / 6 = -0.2065101
  CHECK(r.loss == doctest::Approx(-0.2065101).epsilon(1e-6));
  check_all(r.dlogp, {-1.4549914 / 4, 0, -0.1115651 / 6, 1.4549914 / 6, 0});
  CHECK(r.clip_frac == doctest::Approx(0.4));  // the clip looks at ratio, not at w
  check_policy_grad_by_fd(b, {});
  rl::policy_loss_options off;
  off.is_cap = 0;  // weights off: the plain PPO numbers again
  const auto r0 = rl::policy_loss(b.input(), off);
  CHECK(r0.loss == doctest::Approx(-0.4246661).epsilon(1e-6));
  CHECK(r0.is_weight_mean == 1.0);
}

TEST_CASE("rl policy_loss: empty responses change nothing, an empty batch is all zero") {
  batch b;
  const auto r = rl::policy_loss(b.input(), {});
  b.seq_len = {0, 2, 0, 3};
  const auto r0 = rl::policy_loss(b.input(), {});
  CHECK(r0.loss == doctest::Approx(r.loss));
  check_all(r0.dlogp, std::vector<double>(r.dlogp.begin(), r.dlogp.end()));

  batch e;
  e.logp = e.old_logp = e.adv = {};
  e.seq_len = {0, 0};
  rl::policy_loss_result out;
  out.dlogp = {1, 2, 3};
  rl::policy_loss(e.input(), {}, out);
  CHECK(out.loss == 0.0);
  CHECK(out.clip_frac == 0.0);
  CHECK(out.is_weight_mean == 0.0);
  CHECK(out.dlogp.empty());
}

TEST_CASE("rl policy_loss: the out-parameter form reuses its buffer and agrees") {
  const batch b;
  rl::policy_loss_result out;
  rl::policy_loss(b.input(), {}, out);
  const float* data = out.dlogp.data();
  rl::policy_loss(b.input(), {}, out);
  CHECK(out.dlogp.data() == data);
  CHECK(out.loss == doctest::Approx(-0.4246661).epsilon(1e-6));
}

TEST_CASE("rl policy_loss: size mismatches and bad options are errors naming the cause") {
  auto message = [](batch b, const rl::policy_loss_options& o = {}) {
    return error_of([&] { rl::policy_loss(b.input(), o); });
  };
  batch b;
  b.old_logp.pop_back();
  CHECK(contains(message(b), "old_logp has 4 values, logp has 5"));
  b = {};
  b.adv.push_back(0);
  CHECK(contains(message(b), "advantages has 6"));
  b = {};
  b.behav = {0, 0, 0};
  CHECK(contains(message(b), "behav_logp has 3"));
  b = {};
  b.ref = {0, 0};
  CHECK(contains(message(b), "ref_logp has 2"));
  b = {};
  b.seq_len = {2, 2};
  CHECK(contains(message(b), "seq_len sums to 4 tokens, logp has 5"));
  b = {};
  rl::policy_loss_options o;
  o.kl_coef = 0.04;
  CHECK(contains(message(b, o), "ref_logp is empty"));
  o = {};
  o.agg = rl::loss_agg::seq_mean_token_sum_norm;
  CHECK(contains(message(b, o), "norm_len"));
  o = {};
  o.clip_low = 1.0;
  CHECK(contains(message(b, o), "clip_low"));
  o = {};
  o.clip_high = -0.1;
  CHECK(contains(message(b, o), "clip_high"));
}

TEST_CASE("rl value_loss: both branches above and below the clip range") {
  // clip 0.2 around old = 1: v_clip in [0.8, 1.2].
  //   v      R     v - R   0.5(v-R)^2  v_clip  0.5(v_clip-R)^2  max       dvalue * N
  //   1.125  2    -0.875   0.3828125   1.125   (inside)          unclip    -0.875
  //   1.5    2    -0.5     0.125       1.2     0.32              clip      0
  //   1.5    0.5   1.0     0.5         1.2     0.245             unclip     1.0
  //   0.5    0     0.5     0.125       0.8     0.32              clip      0
  //   0.5    2    -1.5     1.125       0.8     0.72              unclip    -1.5
  // loss = (0.3828125 + 0.32 + 0.5 + 0.32 + 1.125) / 5 = 2.6478125 / 5 = 0.5295625
  const std::vector<float> v = {1.125f, 1.5f, 1.5f, 0.5f, 0.5f};
  const std::vector<float> old = {1, 1, 1, 1, 1};
  const std::vector<float> R = {2, 2, 0.5f, 0, 2};
  const auto r = rl::value_loss(v, old, R, 0.2);
  CHECK(r.loss == doctest::Approx(0.5295625));
  CHECK(r.clip_frac == doctest::Approx(0.4));
  check_all(r.dvalue, {-0.175, 0, 0.2, 0, -0.3});
  // clip off: plain 0.5 (v - R)^2 mean = (0.3828125 + 0.125 + 0.5 + 0.125 + 1.125) / 5
  const auto plain = rl::value_loss(v, old, R, 0.0);
  CHECK(plain.loss == doctest::Approx(2.2578125 / 5));
  CHECK(plain.clip_frac == 0.0);
  check_all(plain.dvalue, {-0.175, -0.1, 0.2, 0.1, -0.3});
}

TEST_CASE("rl value_loss: dvalue matches a central finite difference") {
  std::vector<float> v = {1.125f, 1.5f, 1.5f, 0.5f, 0.5f, -0.75f};
  const std::vector<float> old = {1, 1, 1, 1, 1, -0.5f};
  const std::vector<float> R = {2, 2, 0.5f, 0, 2, 1};
  for (double clip : {0.2, 0.0}) {
    CAPTURE(clip);
    const auto r = rl::value_loss(v, old, R, clip);
    const float h = 1.0f / 1024;
    for (std::size_t i = 0; i < v.size(); ++i) {
      CAPTURE(i);
      const float x = v[i];
      v[i] = x + h;
      const double up = rl::value_loss(v, old, R, clip).loss;
      v[i] = x - h;
      const double down = rl::value_loss(v, old, R, clip).loss;
      v[i] = x;
      CHECK(r.dvalue[i] == doctest::Approx((up - down) / (2.0 * h)).epsilon(1e-5));
    }
  }
}

TEST_CASE("rl value_loss: size mismatches name the array, an empty batch is zero") {
  const std::vector<float> a(3), b(2);
  CHECK(contains(error_of([&] { rl::value_loss(a, b, a, 0.2); }), "old_values has 2"));
  CHECK(contains(error_of([&] { rl::value_loss(a, a, b, 0.2); }), "returns has 2"));
  const auto r = rl::value_loss({}, {}, {}, 0.2);
  CHECK(r.loss == 0.0);
  CHECK(r.dvalue.empty());
}

TEST_CASE("rl ema_update: decay times ema plus the rest of params") {
  std::vector<float> ema = {1, 2};
  const std::vector<float> p = {3, -2};
  rl::ema_update(ema, p, 0.75);
  check_all(ema, {0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2});  // {1.5, 1.0}
  rl::ema_update(ema, p, 0.0);
  check_all(ema, {3, -2});
  const std::vector<float> one = {1};
  CHECK(contains(error_of([&] { rl::ema_update(ema, one, 0.5); }), "params has 1 values"));
  CHECK(contains(error_of([&] { rl::ema_update(ema, p, 1.5); }), "decay must be in [0, 1]"));
}
