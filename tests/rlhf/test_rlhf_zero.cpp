// The policy trained with ZeRO on thread ranks (train.ranks, zero.stage 0 or 1;
// runtime/rl/policy_group): it learns like the single-rank policy, the trainer's log-probs stay
// the engine's bits on-policy, stage 1 (moments split among the ranks) makes the same updates as
// stage 0, and a stopped run resumes to the uninterrupted numbers bit for bit.
#include <doctest/doctest.h>

#include <cmath>

#include "rlhf_helpers.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using namespace zf::testing;

TEST_CASE("rlhf zero: GRPO with the policy on 2 ranks (ZeRO stage 1, overlap 1) learns") {
  temp_dir d("rlhf_zero_learn");
  const rl_outcome r = run_rl_stage(
      d.path, {"train.ranks=2", "zero.stage=1", "rlhf.overlap=1", "rlhf.micro_batch=32"});
  const auto& m = r.metrics;
  REQUIRE(m.size() == 100);
  double best = 0;
  for (std::size_t i = 0; i + 5 <= m.size(); ++i) {
    double s = 0;
    for (std::size_t k = i; k < i + 5; ++k) s += m[k]["reward_mean"].get<double>();
    best = std::max(best, s / 5);
  }
  MESSAGE("GRPO on 2 ranks: reward " << m[0]["reward_mean"] << " -> " << best
                                     << " (best 5 updates), greedy eval "
                                     << r.summary["eval_reward_after"]);
  CHECK(best >= 0.9);
  CHECK(r.summary["eval_reward_after"].get<double>() >= 0.9);
  CHECK(m[0]["logprob_gap_max"].get<double>() == 0.0);  // on-policy: the engine's bits
}

TEST_CASE("rlhf zero: stage 0 and 1 make the same updates, a stopped run resumes exactly") {
  temp_dir d("rlhf_zero");
  const std::vector<std::string> base = {"train.ranks=2", "rlhf.steps=6", "rlhf.micro_batch=32",
                                         "rlhf.overlap=1", "checkpoint.every=2"};
  auto with = [&](const std::string& extra) {
    auto s = base;
    s.push_back(extra);
    return s;
  };
  const rl_outcome s0 = run_rl_stage(d / "s0", with("zero.stage=0"));
  const rl_outcome s1 = run_rl_stage(d / "s1", with("zero.stage=1"));
  REQUIRE(s0.metrics.size() == 6);
  for (std::size_t i = 0; i < 6; ++i) {
    CAPTURE(i);
    for (auto& [k, v] : s0.metrics[i].items()) {
      if (k.starts_with("time_") || k.starts_with("idle_") || k.ends_with("_per_s")) continue;
      CAPTURE(k);
      if (k == "grad_norm")  // the squares are summed over other slices: rounding differs
        CHECK(std::fabs(v.get<double>() - s1.metrics[i][k].get<double>()) <=
              1e-6 * v.get<double>());
      else
        CHECK(s1.metrics[i][k].dump() == v.dump());
    }
  }
  const param_layout layout = make_layout(spec_of(rlhf_config_with({}).model));
  const auto w0 = storage::load_checkpoint(s0.result.checkpoint, layout);
  const auto w1 = storage::load_checkpoint(s1.result.checkpoint, layout);
  CHECK(w0.params == w1.params);
  CHECK(w0.exp_avg == w1.exp_avg);  // stage 1's moments, gathered from both ranks

  rl_run_options o;
  o.out = (d / "resumed").string();
  o.checkpoint = rlhf_fixture("sft").string();
  o.quiet = true;
  o.stop_after = 3;
  run_rl(rlhf_config_with(with("zero.stage=1")), o);
  rl_run_options again;
  again.out = o.out;
  again.resume = true;
  again.quiet = true;
  const rl_run_result r = run_rl(run_config{}, again);
  CHECK(check_same_metrics(s1.metrics, read_jsonl(d / "resumed" / "metrics.jsonl")) > 100);
  const auto wr = storage::load_checkpoint(r.checkpoint, layout);
  CHECK(wr.params == w1.params);
  CHECK(wr.exp_avg_sq == w1.exp_avg_sq);
}

TEST_CASE("rlhf zero: stages 2 and 3 are refused for the policy, naming the key") {
  temp_dir d("rlhf_zero_refused");
  CHECK_THROWS_WITH_AS(
      run_rl_stage(d.path, {"train.ranks=2", "zero.stage=2", "rlhf.steps=1"}),
      doctest::Contains("zero.stage = 2: an RL policy trains with ZeRO stage 0 or 1"), error);
}
