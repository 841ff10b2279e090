#include "pipelines/rl_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>

#include "pipelines/rl_run.hpp"
#include "runtime/core/error.hpp"

namespace zf {
namespace {

struct rl_args {
  CLI::App* cmd = nullptr;
  std::string algorithm, config_file, out, task, data;
  std::vector<std::string> sets;
  bool quiet = false;
};
std::vector<rl_args>& commands() {
  static std::vector<rl_args> c(3);
  return c;
}

std::atomic<bool> g_stop{false};
void on_sigint(int) {
  g_stop = true;
}

std::string default_out(const std::string& algorithm) {
  const auto t = std::chrono::system_clock::now().time_since_epoch();
  return fmt::format("runs/{}-{}", algorithm,
                     std::chrono::duration_cast<std::chrono::seconds>(t).count());
}

}  // namespace

void add_rl_subcommands(CLI::App& app) {
  const char* names[3] = {"grpo", "rloo", "ppo"};
  const char* help[3] = {
      "GRPO: group-relative advantages, clipped objective, k3 KL in the loss",
      "RLOO: leave-one-out baseline, sequence KL folded into the reward",
      "PPO (DeepSpeed-Chat): KL-shaped reward, GAE over a critic, clipped policy and value losses"};
  for (int i = 0; i < 3; ++i) {
    rl_args& a = commands()[i];
    a.algorithm = names[i];
    a.cmd = app.add_subcommand(names[i], help[i]);
    a.cmd->add_option("--config", a.config_file, "TOML config file")->check(CLI::ExistingFile);
    a.cmd->add_option("--set", a.sets, "override one key, e.g. --set rlhf.overlap=1")
        ->allow_extra_args(false);
    a.cmd->add_option("--task", a.task, "built-in task: reverse, add, copy or sort");
    a.cmd->add_option("--data", a.data, "JSON-lines prompts file ({\"prompt\", \"answer\"?})")
        ->check(CLI::ExistingFile);
    a.cmd->add_option("--out", a.out, "run folder (default runs/<algorithm>-<time>)");
    a.cmd->add_flag("--quiet", a.quiet, "no progress lines (metrics.jsonl only)");
  }
}

bool run_rl_subcommands() {
  for (rl_args& a : commands()) {
    if (!a.cmd || !*a.cmd) continue;
    run_config cfg;
    apply_rl_task_defaults(cfg);
    cfg.rlhf.algorithm = a.algorithm;
    if (!a.config_file.empty()) {
      std::ifstream in(a.config_file);
      std::stringstream ss;
      ss << in.rdbuf();
      apply_toml(cfg, ss.str(), a.config_file);
    }
    for (auto& s : a.sets) apply_override(cfg, s);
    if (!a.task.empty()) apply_override(cfg, "rlhf.task=" + a.task);
    if (!a.data.empty()) cfg.rlhf.prompts = a.data;
    cfg.rlhf.algorithm = a.algorithm;
    validate(cfg);
    std::signal(SIGINT, on_sigint);
    rl_run_options o;
    o.out = a.out.empty() ? default_out(a.algorithm) : a.out;
    o.quiet = a.quiet;
    o.stop = &g_stop;
    run_rl(cfg, o);
    return true;
  }
  return false;
}

}  // namespace zf
