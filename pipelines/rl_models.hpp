#pragma once
// The models of an RLHF run and where they come from (pipelines/rl_run, the sft and reward
// commands): the tokenizer and policy shape (a built-in task's byte vocabulary and a small GPT-2
// from scratch, or a zeroflow checkpoint's), the warm-up and preference data (the user's
// JSON-lines files, or the task's generator), and saving a model as a checkpoint that `serve`,
// `score` and the next RLHF stage load.
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"
#include "runtime/rl/reward_model.hpp"
#include "runtime/rl/sft.hpp"
#include "runtime/rl/tasks.hpp"
#include "runtime/text/tokenizer.hpp"
#include "runtime/train/optim.hpp"

namespace zf {

// What a stage starts from. cfg.model is the policy's shape, cfg.data.tokenizer the run folder
// (its tokenizer.json is written there, so every checkpoint of the run serves as it is).
struct rl_setup {
  run_config cfg;
  std::unique_ptr<tokenizer> tok;
  model_spec spec;                       // the policy's, eos_id the end-of-text token
  std::shared_ptr<const rl::task> task;  // the built-in task (rlhf.task)
  std::vector<float> init;               // the checkpoint's parameters; empty: from scratch
};

// checkpoint "" starts from scratch on the byte vocabulary (model keys as given); else from that
// zeroflow checkpoint (its model keys and tokenizer; a value head is dropped for a policy).
rl_setup setup_rl(run_config cfg, const std::filesystem::path& out, const std::string& checkpoint);

// The compute precision of every RLHF role's model (train.precision, issue 16): fp32 or bf16
// (bf16 GEMMs, fp32 master weights and optimizer state). fp16 is refused naming the key: the RL
// steps have no loss scaler.
kernels::precision rl_precision(const run_config& cfg);

// A policy (no value head) or a value-head model (reward model, critic) of the setup's shape:
// the checkpoint's parameters where it has them (matched by name), else initialised from seed;
// at rl_precision.
std::unique_ptr<transformer> make_model(const rl_setup& s, bool value_head, uint64_t seed);

// Warm-up pairs: rlhf.sft_data, else 4096 task samples of which rlhf.sft_noise answer wrong.
std::vector<rl::sft_pair> sft_pairs(const rl_setup& s);
// Preference pairs: rlhf.preference_data, else `count` from the task (chosen right, rejected a
// plausible wrong answer of the same length).
std::vector<rl::preference_ids> preference_pairs(const rl_setup& s, int count);

// Saves m (and its AdamW moments when opt is given) to out/checkpoints as step `step`, with the
// setup's config (model.value_head as m has it) and `state`; returns the step folder.
std::string save_model(const rl_setup& s, const std::filesystem::path& out, transformer& m,
                       const adamw* opt, int step, const nlohmann::json& state);

// j pretty-printed to p (a run's summary.json); zf::error when it cannot be written.
void write_json_file(const std::filesystem::path& p, const nlohmann::json& j);

// A value-head model from a checkpoint saved by `zeroflow reward` (rlhf.reward_model).
std::unique_ptr<transformer> load_reward_model(const rl_setup& s, const std::string& dir);

}  // namespace zf
