#include "pipelines/rl_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>

#include "pipelines/rl_run.hpp"
#include "runtime/core/error.hpp"
#include "runtime/rl/tasks.hpp"
#include "storage/fs_util.hpp"

namespace zf {
namespace {

struct rl_args {
  std::string name;
  CLI::App* cmd = nullptr;
  std::string config_file, out, task, data, checkpoint, reward_model, hf, graph;
  std::vector<std::string> sets;
  bool quiet = false, resume = false;
  int stop_after = 0;
};
std::vector<rl_args>& commands() {
  static std::vector<rl_args> c;
  return c;
}

std::atomic<bool> g_stop{false};
extern "C" void on_rl_sigint(int) {
  g_stop = true;
}

std::string default_out(const std::string& name) {
  const auto t = std::chrono::system_clock::now().time_since_epoch();
  return fmt::format("runs/{}-{}", name,
                     std::chrono::duration_cast<std::chrono::seconds>(t).count());
}

struct spec {
  const char* name;
  const char* help;
  const char* data_help;
};
constexpr spec k_specs[] = {
    {"sft", "supervised fine-tuning on prompt/response pairs (loss on the response only)",
     "JSON-lines SFT pairs ({\"prompt\", \"response\"})"},
    {"reward", "train a reward model on preference pairs (pairwise loss, held-out accuracy)",
     "JSON-lines preference pairs ({\"prompt\", \"chosen\", \"rejected\"})"},
    {"grpo", "GRPO: group-relative advantages, clipped objective, k3 KL in the loss",
     "JSON-lines prompts ({\"prompt\", \"answer\"?})"},
    {"rloo", "RLOO: leave-one-out baseline, sequence KL folded into the reward",
     "JSON-lines prompts ({\"prompt\", \"answer\"?})"},
    {"ppo", "PPO (DeepSpeed-Chat): KL-shaped reward, GAE over a critic, clipped losses",
     "JSON-lines prompts ({\"prompt\", \"answer\"?})"},
};

run_config config_of_args(const rl_args& a) {
  run_config cfg;
  rl::apply_task_defaults(cfg);
  if (!a.config_file.empty())
    apply_toml(cfg, storage::read_text_file(a.config_file), a.config_file);
  for (auto& s : a.sets) apply_override(cfg, s);
  if (!a.task.empty()) apply_override(cfg, "rlhf.task=" + a.task);
  if (!a.reward_model.empty()) cfg.rlhf.reward_model = a.reward_model;
  if (!a.hf.empty()) cfg.model.init_hf = a.hf;
  if (!a.data.empty()) {
    if (a.name == "sft")
      cfg.rlhf.sft_data = a.data;
    else if (a.name == "reward")
      cfg.rlhf.preference_data = a.data;
    else
      cfg.rlhf.prompts = a.data;
  }
  if (a.name != "sft" && a.name != "reward") cfg.rlhf.algorithm = a.name;
  validate(cfg);
  return cfg;
}

}  // namespace

void add_rl_subcommands(CLI::App& app) {
  commands().resize(std::size(k_specs));
  for (std::size_t i = 0; i < std::size(k_specs); ++i) {
    rl_args& a = commands()[i];
    a.name = k_specs[i].name;
    a.cmd = app.add_subcommand(a.name, k_specs[i].help);
    a.cmd->add_option("--config", a.config_file, "TOML config file")->check(CLI::ExistingFile);
    a.cmd->add_option("--set", a.sets, "override one key, e.g. --set rlhf.overlap=1")
        ->allow_extra_args(false);
    a.cmd->add_option("--task", a.task, "built-in task: reverse, add, copy or sort");
    a.cmd->add_option("--data", a.data, k_specs[i].data_help)->check(CLI::ExistingFile);
    a.cmd->add_option("--checkpoint", a.checkpoint, "start from this zeroflow checkpoint")
        ->check(CLI::ExistingDirectory);
    a.cmd
        ->add_option("--hf", a.hf,
                     "start from this Hugging Face GPT-2 or Llama folder (config.json, "
                     "safetensors, tokenizer.json)")
        ->check(CLI::ExistingDirectory);
    if (i >= 2) {
      a.cmd->add_flag("--resume", a.resume,
                      "continue the run in --out from its newest checkpoint, exactly (its own "
                      "configuration)");
      a.cmd
          ->add_option("--stop-after", a.stop_after,
                       "stop after this update, with a checkpoint (resume later)")
          ->check(CLI::NonNegativeNumber);
    }
    if (i >= 2)
      a.cmd
          ->add_option("--graph", a.graph,
                       "run this graph file instead of the built-in examples/graphs/rlhf.toml "
                       "(stage types: zeroflow graph types)")
          ->check(CLI::ExistingFile);
    if (i >= 2)
      a.cmd
          ->add_option("--reward-model", a.reward_model,
                       "a reward model checkpoint (`zeroflow reward`), summed with the rule "
                       "reward (--set rlhf.rule_reward=0 for the model alone)")
          ->check(CLI::ExistingDirectory);
    a.cmd->add_option("--out", a.out, "run folder (default runs/<command>-<time>)");
    a.cmd->add_flag("--quiet", a.quiet, "no progress lines (metrics.jsonl only)");
  }
}

bool run_rl_subcommands() {
  for (rl_args& a : commands()) {
    if (!a.cmd || !*a.cmd) continue;
    const run_config cfg = config_of_args(a);
    std::signal(SIGINT, on_rl_sigint);
    rl_run_options o;
    o.out = a.out.empty() ? default_out(a.name) : a.out;
    o.checkpoint = a.checkpoint;
    o.resume = a.resume;
    o.stop_after = a.stop_after;
    if (a.resume && a.out.empty()) fail("--resume needs --out DIR (the run to continue)");
    o.quiet = a.quiet;
    o.stop = &g_stop;
    o.graph = a.graph;
    if (a.name == "sft")
      run_sft(cfg, o);
    else if (a.name == "reward")
      run_reward(cfg, o);
    else
      run_rl(cfg, o);
    return true;
  }
  return false;
}

}  // namespace zf
