#pragma once
// `zeroflow ckpt`: inspect, verify, export and import checkpoints (storage/checkpoint.hpp).
//   ckpt info DIR                                    step, world/stage written with, tensors, files
//   ckpt verify DIR                                  every file, size and fragment CRC; non-zero
//                                                    exit listing the problems
//   ckpt export DIR --format safetensors --out FILE  Hugging Face GPT-2 safetensors + config.json
//   ckpt import FILE --out DIR                       safetensors + config.json -> step-0 checkpoint
// DIR is a step folder, a checkpoints/ root or a run folder.
namespace CLI {
class App;
}

namespace zf {

// Adds the `ckpt` subcommand (and its four subcommands) to app.
void add_ckpt_subcommand(CLI::App& app);
// Runs it if it was parsed: returns true if it ran; throws zf::error on failure (verify: when
// the checkpoint has problems, listing them).
bool run_ckpt_subcommand();

}  // namespace zf
