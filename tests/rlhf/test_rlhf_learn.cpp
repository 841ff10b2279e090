// RLHF learns, asserted: from the noisy-SFT policy of the fixture (about half its demonstrations
// were wrong, so it samples the right reversal about half the time), GRPO, RLOO and PPO each
// raise the mean rollout reward (over 5 consecutive updates) to >= 0.9 within their default 100
// updates, synchronously and with rollouts one update ahead (rlhf.overlap = 1), and greedy
// decoding of held-out prompts ends >= 0.9; on-policy the trainer's log-probs are the rollout
// engine's bits (gap exactly 0, logged every step). PPO with the learned reward model alone
// raises the task's true (rule) reward to >= 0.8.
#include <doctest/doctest.h>

#include "rlhf_helpers.hpp"

using namespace zf;
using namespace zf::testing;

namespace {

double mean_of(const std::vector<nlohmann::json>& m, const char* key, std::size_t from,
               std::size_t to) {
  double s = 0;
  for (std::size_t i = from; i < to; ++i) s += m[i][key].get<double>();
  return s / double(to - from);
}

// The best mean of `key` over 5 consecutive updates: what the run reached.
double reached(const std::vector<nlohmann::json>& m, const char* key) {
  double best = -1e300;
  for (std::size_t i = 0; i + 5 <= m.size(); ++i) best = std::max(best, mean_of(m, key, i, i + 5));
  return best;
}

void check_learns(const std::string& algorithm) {
  for (int overlap : {0, 1}) {
    CAPTURE(overlap);
    temp_dir dir("rlhf_" + algorithm);
    const rl_outcome r = run_rl_stage(
        dir.path, {"rlhf.algorithm=" + algorithm, "rlhf.overlap=" + std::to_string(overlap)});
    const auto& m = r.metrics;
    REQUIRE(m.size() == 100);
    const double first = m[0]["reward_mean"], best = reached(m, "reward_mean");
    MESSAGE(algorithm << " overlap " << overlap << ": reward " << first << " -> " << best
                      << " (best 5 updates), last 5 "
                      << mean_of(m, "reward_mean", m.size() - 5, m.size()) << ", greedy eval "
                      << r.summary["eval_reward_before"] << " -> "
                      << r.summary["eval_reward_after"]);
    CHECK(first < 0.7);  // the task is not solved before RL
    CHECK(best >= 0.9);
    CHECK(r.summary["eval_reward_after"].get<double>() >= 0.9);
    // Every update says where its rollouts came from; on-policy ones agree exactly.
    int on_policy = 0;
    for (std::size_t i = 0; i < m.size(); ++i) {
      CAPTURE(i);
      const int lag = m[i]["version_lag"];
      CHECK(lag == (overlap == 0 || i == 0 ? 0 : 1));
      if (lag == 0) {
        ++on_policy;
        REQUIRE(m[i]["logprob_gap_max"].is_number());
        CHECK(m[i]["logprob_gap_max"].get<double>() == 0.0);
      } else {
        CHECK(m[i]["logprob_gap_max"].is_null());
        CHECK(m[i]["is_weight_mean"].get<double>() > 0);
      }
      for (const char* k : {"kl", "entropy", "time_gen_s", "time_train_s", "time_sync_s",
                            "idle_frac_trainer", "idle_frac_engine", "samples_per_s"})
        CHECK(m[i].contains(k));
      CHECK(m[i]["sync_bytes"].get<double>() == 4.0 * 118592);  // the policy's fp32 weights
    }
    CHECK(on_policy == (overlap == 0 ? 100 : 1));
    CHECK(r.summary["lag_histogram"][overlap == 0 ? "0" : "1"] == (overlap == 0 ? 100 : 99));
    // The final policy is a checkpoint the next stage (or `serve`) loads.
    CHECK(std::filesystem::exists(std::filesystem::path(r.result.checkpoint) / "manifest"));
  }
}

}  // namespace

TEST_CASE("rlhf learn: GRPO reaches mean reward >= 0.9 on reverse, overlap 0 and 1") {
  check_learns("grpo");
}

TEST_CASE("rlhf learn: RLOO reaches mean reward >= 0.9 on reverse, overlap 0 and 1") {
  check_learns("rloo");
}

TEST_CASE("rlhf learn: PPO reaches mean reward >= 0.9 on reverse, overlap 0 and 1") {
  check_learns("ppo");
}

TEST_CASE("rlhf learn: the reward model ranks >= 0.95 of held-out preference pairs right") {
  const auto s = read_json(rlhf_fixture("rm") / "summary.json");
  MESSAGE("reward model pairwise accuracy: train " << s["train_accuracy"] << ", held-out "
                                                   << s["heldout_accuracy"] << " of "
                                                   << s["heldout_pairs"] << " pairs");
  CHECK(s["heldout_pairs"].get<int>() >= 1000);
  CHECK(s["heldout_accuracy"].get<double>() >= 0.95);
  CHECK(s["loss_last"].get<double>() < s["loss_first"].get<double>());
}

TEST_CASE("rlhf learn: PPO with the learned reward model alone raises the true reward to >= 0.8") {
  temp_dir dir("rlhf_ppo_rm");
  const rl_outcome r = run_rl_stage(
      dir.path, {"rlhf.algorithm=ppo", "rlhf.rule_reward=0", "rlhf.lr=1e-3", "rlhf.steps=120",
                 "rlhf.reward_model=" + rlhf_fixture("rm").string()});
  const auto& m = r.metrics;
  REQUIRE(m.size() == 120);
  const double first = m[0]["true_reward_mean"], best = reached(m, "true_reward_mean");
  MESSAGE("ppo on the reward model: true reward "
          << first << " -> " << best << " (best 5 updates), model reward " << m[0]["reward_mean"]
          << " -> " << m.back()["reward_mean"] << ", greedy eval "
          << r.summary["eval_reward_before"] << " -> " << r.summary["eval_reward_after"]);
  CHECK(r.summary["reward"] == "model");
  CHECK(first < 0.7);
  CHECK(best >= 0.8);
  // Greedy decoding of the SFT policy is already good (0.86-0.92 depending on the machine's
  // BLAS kernels), and the learned reward model is imperfect: PPO on it alone raises the
  // sampled true reward (above) but may trade a little greedy accuracy. It must stay solved
  // (>= 0.8) and not drop by more than 0.1 (seen: 0.921 -> 0.856 on one machine, a rise on
  // another).
  const double before = r.summary["eval_reward_before"], after = r.summary["eval_reward_after"];
  CHECK(after >= 0.8);
  CHECK(after >= before - 0.1);
}

// Same seed, same numbers: everything but the wall clock, bit for bit, with rollouts running
// ahead on the engine's thread (which version each batch uses is fixed, not raced).
TEST_CASE("rlhf: the same seed gives the same metrics bit for bit, overlap on") {
  std::vector<std::vector<nlohmann::json>> runs;
  for (int i = 0; i < 2; ++i) {
    temp_dir dir("rlhf_repro");
    runs.push_back(run_rl_stage(dir.path, {"rlhf.overlap=1", "rlhf.steps=12"}).metrics);
  }
  REQUIRE(runs[0].size() == 12);
  REQUIRE(runs[1].size() == 12);
  int compared = 0;
  for (std::size_t i = 0; i < runs[0].size(); ++i)
    for (auto& [k, v] : runs[0][i].items()) {
      if (k.starts_with("time_") || k.starts_with("idle_") || k.ends_with("_per_s")) continue;
      CAPTURE(i);
      CAPTURE(k);
      CHECK(runs[1][i][k].dump() == v.dump());  // dump: every double's shortest exact text
      ++compared;
    }
  CHECK(compared > 12 * 15);
}
