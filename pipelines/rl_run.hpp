#pragma once
// An RL run end to end (`zeroflow grpo | rloo | ppo`): the tokenizer and the policy (from
// scratch on a built-in task's byte vocabulary, SFT-warmed), the reference and the PPO critic,
// the rollout engine (the serving engine actor, batch-invariant, in this process), the prompt
// source and the rule reward, then runtime/rl's loop; metrics.jsonl, summary.json and the final
// policy checkpoint go to the run folder.
#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/core/config.hpp"
#include "runtime/rl/rl_loop.hpp"

namespace zf {

struct rl_run_options {
  std::string out;  // run folder (created)
  bool quiet = false;
  const std::atomic<bool>* stop = nullptr;
  std::function<void(const nlohmann::json&)> on_metrics;  // besides metrics.jsonl
};

struct rl_run_result {
  rl::rl_result rl;
  float sft_loss_first = 0, sft_loss_last = 0;  // warm-up (0, 0 when none ran)
  std::string checkpoint;                       // the final policy's step folder
};

// The model keys a policy trained from scratch on a task gets unless the user sets them: a small
// GPT-2 on the byte vocabulary.
void apply_rl_task_defaults(run_config& c);
rl_run_result run_rl(run_config cfg, const rl_run_options& o);

}  // namespace zf
