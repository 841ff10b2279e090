#pragma once
// The RL run as a plain class: the rollout worker (runtime/rl/rollout) generates batch s on the
// serving engine with weights version max(0, s - overlap) while this thread trains the policy on
// earlier batches (runtime/rl/update); after update s it publishes version s + 1, which the
// worker swaps into the engine between batches. Evaluation (greedy, held-out prompts) runs on
// the same engine before the first and after the last update. Each step's figures go to a
// callback as one JSON object (metrics.jsonl): the deterministic ones (rewards, KL, losses,
// log-prob gap, lag) and the wall-clock split (generation, scoring, training, weight sync, idle
// per role).
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/lm_weights.hpp"
#include "runtime/rl/prompts.hpp"
#include "runtime/rl/update.hpp"
#include "runtime/serve/serving.hpp"

namespace zf::rl {

// What a checkpoint of an RL run holds beyond the models the caller owns: the updates done and
// the weights of the versions that rollouts still to come were (or will be) generated with
// (max(0, step - overlap) .. step - 1), so that a resumed run regenerates them bit for bit.
struct rl_checkpoint {
  int step = 0;  // updates done; the policy is version `step`
  std::pair<int, int> optimizer_steps;
  std::map<uint64_t, std::shared_ptr<const lm_weights>> versions;
};

struct rl_loop_options {
  rlhf_config rl;
  optimizer_config opt;
  uint64_t seed = 0;
  const std::atomic<bool>* stop = nullptr;  // true: stop after the current update
  int stop_after = 0;                       // > 0: stop (as if interrupted) after this update
  int checkpoint_every = 0;  // > 0: checkpoint every so many updates (and at the end)
  std::function<void(const rl_checkpoint&)> checkpoint;  // writes one (models: the caller's)
  // Resuming: updates done, AdamW step counts, and the weights of versions
  // max(0, start_step - overlap) .. start_step - 1 (a checkpoint's `versions`); the engine must
  // serve version max(0, start_step - overlap) labelled 0 when that is 0.
  int start_step = 0;
  std::pair<int, int> start_optimizer_steps;
  std::map<uint64_t, std::shared_ptr<const lm_weights>> start_versions;
};

struct rl_result {
  int steps = 0;                               // updates done
  double eval_before = 0, eval_after = 0;      // mean rule reward, greedy, on the held-out prompts
  double solved_before = 0, solved_after = 0;  // fraction exactly right
  std::vector<nlohmann::json> metrics;         // one per update
  std::map<int, int> lag_histogram;            // policy version lag -> updates
  bool interrupted = false;
};

class rl_loop {
 public:
  using metrics_fn = std::function<void(const nlohmann::json&)>;
  // engine serves the policy's current weights as version 0. policy_spec: the served spec (its
  // eos_id ends completions). reward adds the rule reward (weighted by rl.rule_reward) to what
  // extra_reward gives (a reward model; may be null).
  rl_loop(rl_loop_options o, rl_models m, serve::completion_backend& engine,
          const prompt_source& prompts, reward_fn extra_reward, metrics_fn on_metrics,
          ptx_fn ptx = nullptr);
  rl_result run();
  // Greedy mean rule reward and solved fraction of the held-out prompts on the engine now.
  std::pair<double, double> evaluate();
  // The policy's EMA weights (rl.ema > 0), else empty.
  std::vector<float>& ema() { return ema_; }

 private:
  // The rule reward (weighted) plus the extra reward of each sequence into out; returns the rule
  // reward's mean (-1: no rule).
  double rewards(const rollout_batch& b, std::vector<float>& out);
  void score_frozen(rollout_batch& b);  // on the rollout worker's thread
  nlohmann::json step_json(int s, const rollout_batch& b, const update_stats& st, double wall,
                           double wait, double publish_s);

  rl_loop_options o_;
  rl_models m_;
  serve::completion_backend& engine_;
  const prompt_source& prompts_;
  reward_fn extra_;
  metrics_fn on_metrics_;
  rl_updater updater_;
  std::vector<std::vector<prompt_item>> step_prompts_;  // by step, for the rewards (worker fills)
  std::mutex mu_;
  std::vector<float> ema_;
};

}  // namespace zf::rl
