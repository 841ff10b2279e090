#include "pipelines/rl_state.hpp"

#include <fmt/format.h>

#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"

namespace zf {
namespace fs = std::filesystem;

namespace {

fs::path role_root(const fs::path& out, const std::string& role) {
  return out / "roles" / role;
}

std::string step_name(int step) {
  return fmt::format("step-{:06d}", step);
}

void save_flat(const rl_setup& s, const fs::path& root, const param_layout& layout,
               const float* params, int step) {
  storage::checkpoint_view v;
  v.step = step;
  v.config_toml = to_toml(s.cfg);
  v.layout = &layout;
  v.params = params;
  storage::save_checkpoint(root / "checkpoints", v, 1);
}

// Reads root/checkpoints/step-N into m (and its moments into opt when given).
void load_role(const fs::path& root, int step, transformer& m, adamw* opt) {
  const fs::path dir = root / "checkpoints" / step_name(step);
  if (!fs::exists(dir / "manifest"))
    fail("resume: {} is missing (the run's roles are incomplete at step {})", dir.string(), step);
  auto ck = storage::load_checkpoint(dir, m.layout());
  std::copy(ck.params.begin(), ck.params.end(), m.params().data());
  if (!opt) return;
  if (ck.exp_avg.size() != opt->m().size() || ck.exp_avg_sq.size() != opt->v().size())
    fail("resume: {} has no optimizer moments of the right size", dir.string());
  std::copy(ck.exp_avg.begin(), ck.exp_avg.end(), opt->m().data());
  std::copy(ck.exp_avg_sq.begin(), ck.exp_avg_sq.end(), opt->v().data());
}

}  // namespace

std::string save_rl_state(const rl_setup& s, const fs::path& out, const rl::rl_checkpoint& ck,
                          const rl_role_models& m, nlohmann::json state) {
  if (m.reference) save_model(s, role_root(out, "reference"), *m.reference, nullptr, ck.step, {});
  if (m.critic) save_model(s, role_root(out, "critic"), *m.critic, m.critic_opt, ck.step, {});
  if (m.ema && !m.ema->empty())
    save_flat(s, role_root(out, "ema"), m.policy->layout(), m.ema->data(), ck.step);
  for (auto& [v, w] : ck.versions)
    save_flat(s, role_root(out, fmt::format("version-{}", v)), w->layout, w->store.data(), ck.step);
  state["rl_step"] = ck.step;
  state["policy_optimizer_steps"] = ck.optimizer_steps.first;
  state["critic_optimizer_steps"] = ck.optimizer_steps.second;
  std::vector<uint64_t> versions;
  for (auto& [v, w] : ck.versions) versions.push_back(v);
  state["pending_versions"] = versions;
  const std::string dir = save_model(s, out, *m.policy, m.policy_opt, ck.step, state);
  // Versions no rollout will need again.
  std::error_code ec;
  if (fs::is_directory(out / "roles", ec))
    for (auto& e : fs::directory_iterator(out / "roles", ec)) {
      const std::string name = e.path().filename().string();
      if (!name.starts_with("version-")) continue;
      const uint64_t v = std::stoull(name.substr(8));
      if (!ck.versions.count(v)) fs::remove_all(e.path(), ec);
    }
  return dir;
}

fs::path latest_rl_step(const fs::path& out) {
  if (!storage::has_checkpoint(out / "checkpoints")) return {};
  return storage::resolve_checkpoint(out / "checkpoints");
}

rl::rl_checkpoint load_rl_state(const rl_setup& s, const fs::path& out, const fs::path& step_dir,
                                const rl_role_models& m) {
  const auto head = storage::read_manifest(step_dir);
  if (!head.state.contains("rl_step"))
    fail("resume: {} is not an RL run's checkpoint (no rl_step in its state)", step_dir.string());
  rl::rl_checkpoint ck;
  ck.step = head.state["rl_step"].get<int>();
  ck.optimizer_steps = {head.state["policy_optimizer_steps"].get<int>(),
                        head.state["critic_optimizer_steps"].get<int>()};
  load_role(out, ck.step, *m.policy, m.policy_opt);
  if (m.reference) load_role(role_root(out, "reference"), ck.step, *m.reference, nullptr);
  if (m.critic) load_role(role_root(out, "critic"), ck.step, *m.critic, m.critic_opt);
  if (m.ema && !m.ema->empty()) {
    transformer tmp(s.spec, true, false);
    load_role(role_root(out, "ema"), ck.step, tmp, nullptr);
    std::copy_n(tmp.params().data(), tmp.params().size(), m.ema->data());
  }
  transformer tmp(s.spec, true, false);
  for (uint64_t v : head.state["pending_versions"].get<std::vector<uint64_t>>()) {
    load_role(role_root(out, fmt::format("version-{}", v)), ck.step, tmp, nullptr);
    ck.versions[v] =
        std::make_shared<const lm_weights>(copy_lm_weights(s.spec, tmp.params().data()));
  }
  return ck;
}

}  // namespace zf
