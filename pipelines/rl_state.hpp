#pragma once
// An RL run's checkpoint, for resuming it exactly: the policy with its AdamW moments in
// out/checkpoints (what `serve` and the next stage load), and beside it, at the same step, every
// other role in out/roles/<role>/checkpoints: the frozen reference, the PPO critic with its
// moments, the policy's EMA, and the weight versions of rollouts still to come
// (roles/version-<v>). The roles are written first and the policy last, so a policy step folder
// means its roles are complete.
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "pipelines/rl_models.hpp"
#include "runtime/rl/rl_core.hpp"

namespace zf {

struct rl_role_models {
  transformer* policy = nullptr;
  adamw* policy_opt = nullptr;
  transformer* reference = nullptr;
  transformer* critic = nullptr;
  adamw* critic_opt = nullptr;
  std::vector<float>* ema = nullptr;  // empty: none
};

// Writes checkpoint ck of the run in out; `state` goes into the policy's manifest (with the
// step and optimizer counts). Returns the policy's step folder.
std::string save_rl_state(const rl_setup& s, const std::filesystem::path& out,
                          const rl::rl_checkpoint& ck, const rl_role_models& m,
                          nlohmann::json state);

// The newest policy step folder of the run in out ("" when there is none).
std::filesystem::path latest_rl_step(const std::filesystem::path& out);

// Loads the checkpoint at `step_dir` (a policy step folder of the run in out) into the models
// (already of the run's shapes) and returns the step, optimizer counts and weight versions.
rl::rl_checkpoint load_rl_state(const rl_setup& s, const std::filesystem::path& out,
                                const std::filesystem::path& step_dir, const rl_role_models& m);

}  // namespace zf
