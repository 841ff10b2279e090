#pragma once
// The RL run's logic, without actors or threads (as engine_core is serving's): what each role
// does, called by the graph stages that own the roles (pipelines/stages_rl) on their threads:
//   rollout role  prompt_ids(s) for the rollout worker (runtime/rl/rollout), evaluate() on the
//                 engine before the first and after the last update
//   frozen roles  score(batch): reference log-probs and rewards (rule, reward model), right after
//                 generation, beside the trainer
//   policy role   update(batch): one GRPO/RLOO/PPO update (runtime/rl/update), the next weights
//                 version, the EMA, the checkpoint and whether the run ends here
// Batch s is generated with weights version max(0, s - overlap) exactly, so a run is the same bit
// for bit whatever the timing. Each update's figures are one JSON object (metrics.jsonl): the
// deterministic ones (rewards, KL, losses, log-prob gap, lag) and the wall-clock split.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
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

struct rl_core_options {
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

// One update's outcome for the policy role to pass on.
struct rl_step {
  nlohmann::json metrics;
  uint64_t version = 0;                       // of the policy now
  std::shared_ptr<const lm_weights> weights;  // of that version
  bool publish = false;                       // a later batch is generated with it
  bool last = false;                          // the run ends here (steps done, stop, stop_after)
};

class rl_core {
 public:
  // reward adds the rule reward (weighted by rl.rule_reward) to what extra_reward gives (a reward
  // model; may be null).
  rl_core(rl_core_options o, rl_models m, const prompt_source& prompts, reward_fn extra_reward,
          ptx_fn ptx = nullptr);
  const rl_core_options& options() const { return o_; }

  // Rollout role. Any thread.
  std::vector<std::vector<int>> prompt_ids(int step) const;
  // Greedy mean rule reward and solved fraction of the held-out prompts on the engine now.
  std::pair<double, double> evaluate(serve::completion_backend& engine) const;
  // Versions the rollout worker must be given before it starts (a resumed run's), by version.
  std::map<uint64_t, std::shared_ptr<const lm_weights>> initial_versions() const;

  // Frozen roles: reference log-probs and rewards into b (b.scored). One thread at a time.
  void score(rollout_batch& b) const;

  // Policy role: one update from batch b (the next one, in order); wait_s is how long the policy
  // waited for it. Calls the checkpoint callback when one is due. One thread.
  rl_step update(const rollout_batch& b, double wait_s);
  std::vector<float>& ema() { return ema_; }  // the policy's EMA weights (rl.ema > 0)

 private:
  double rewards(const rollout_batch& b, std::vector<float>& out) const;
  nlohmann::json step_json(int s, const rollout_batch& b, const update_stats& st, double wall,
                           double wait, double publish_s) const;

  rl_core_options o_;
  rl_models m_;
  const prompt_source& prompts_;
  reward_fn extra_;
  rl_updater updater_;
  std::vector<float> ema_;
  mutable score_scratch score_scratch_;  // the frozen roles' (score() is one thread at a time)
  // policy role's state
  int next_ = 0;  // the update to do next
  std::chrono::steady_clock::time_point last_;
  std::map<uint64_t, std::shared_ptr<const lm_weights>> recent_;  // versions rollouts still use
};

}  // namespace zf::rl
