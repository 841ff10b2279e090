#pragma once
// The RLHF stages end to end, as DeepSpeed-Chat's three steps:
//   run_sft     (`zeroflow sft`):    prompt/response pairs, loss on the response only
//   run_reward  (`zeroflow reward`): a value-head model on preference pairs, pairwise loss,
//                                    accuracy on a held-out split
//   run_rl      (`zeroflow grpo | rloo | ppo`): the policy against the rule reward, a reward
//                                    model or both, rollouts on the serving engine (actor,
//                                    batch-invariant, in this process), runtime/rl's loop
// Each starts from scratch on a built-in task (the byte vocabulary, a small GPT-2) or from a
// zeroflow checkpoint, and writes its run folder: tokenizer.json, metrics.jsonl, summary.json
// and checkpoints/ (which `serve`, `score` and the next stage load).
#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/core/config.hpp"
#include "runtime/rl/rl_core.hpp"

namespace zf {

struct rl_run_options {
  std::string out;         // run folder (created)
  std::string checkpoint;  // start from this zeroflow checkpoint ("" = from scratch)
  bool resume = false;     // continue the RL run in `out` from its newest checkpoint, exactly
  int stop_after = 0;      // > 0: stop after this update, with a checkpoint (resume later)
  bool quiet = false;
  const std::atomic<bool>* stop = nullptr;
  std::function<void(const nlohmann::json&)> on_metrics;  // besides metrics.jsonl
  // rlhf.rollout_placement = process: the zeroflow binary the engine process runs ("" = this
  // one; a program embedding run_rl, such as a test, names the CLI's).
  std::string engine_executable;
  std::string graph;  // run this graph file instead of the built-in examples/graphs/rlhf.toml
};

struct rl_run_result {
  rl::rl_result rl;
  float sft_loss_first = 0, sft_loss_last = 0;  // warm-up (0, 0 when none ran)
  std::string checkpoint;                       // the final model's step folder
};

rl_run_result run_rl(run_config cfg, const rl_run_options& o);

struct sft_run_result {
  float loss_first = 0, loss_last = 0;
  double heldout_loss = 0;  // mean response-token loss on 256 held-out pairs
  std::string checkpoint;
};
// rlhf.sft_steps steps (batch rlhf.sft_batch, lr rlhf.sft_lr) on rlhf.sft_data or the task's.
sft_run_result run_sft(run_config cfg, const rl_run_options& o);

struct reward_run_result {
  float loss_first = 0, loss_last = 0;
  double train_accuracy = 0, heldout_accuracy = 0;
  std::string checkpoint;
};
// rlhf.rm_steps steps on preference pairs (rlhf.preference_data or the task's), a tenth held out.
reward_run_result run_reward(run_config cfg, const rl_run_options& o);

}  // namespace zf
