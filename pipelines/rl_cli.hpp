#pragma once
// `zeroflow grpo | rloo | ppo`: RL on a built-in task or the user's prompts (pipelines/rl_run).
//   zeroflow grpo --task reverse [--config F] [--set rlhf.overlap=1] [--out DIR] [--quiet]
namespace CLI {
class App;
}

namespace zf {

void add_rl_subcommands(CLI::App& app);
// Runs the one that was parsed: true if one ran. Throws zf::error on failure.
bool run_rl_subcommands();

}  // namespace zf
