#pragma once
// The RLHF commands (pipelines/rl_run):
//   zeroflow sft    [--task T | --data pairs.jsonl]       [--checkpoint DIR] [--out DIR]
//   zeroflow reward [--task T | --data preferences.jsonl] [--checkpoint DIR] [--out DIR]
//   zeroflow grpo | rloo | ppo [--task T | --data prompts.jsonl] [--checkpoint DIR]
//                              [--reward-model DIR] [--out DIR]
// each also with --config FILE, --set key=value and --quiet.
namespace CLI {
class App;
}

namespace zf {

void add_rl_subcommands(CLI::App& app);
// Runs the one that was parsed: true if one ran. Throws zf::error on failure.
bool run_rl_subcommands();

}  // namespace zf
