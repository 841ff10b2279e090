#pragma once
// `zeroflow quantize` (issue 14): a zeroflow checkpoint or a Hugging Face folder quantized into a
// new checkpoint (storage/quant_checkpoint.hpp) that serve, generate and score load like any.
//   quantize --checkpoint DIR | --hf DIR --scheme S --out DIR [--method rtn|gptq]
//            [--group-size N] [--lorc-rank R] [--lkd-steps N] [--keep-head]
//            [--calibration FILE] [--calibration-windows N]
// The same flags (with --quantize for --scheme) quantize in memory for `score`. Calibration
// (GPTQ, LKD) is --calibration's text; without it, the training part of the checkpoint's own
// corpus, or for a Hugging Face model text it samples itself.
#include <memory>
#include <string>

#include "runtime/model/lm_weights.hpp"

namespace CLI {
class App;
}

namespace zf {

struct run_config;
class tokenizer;

struct quant_flags {
  std::string scheme, method = "rtn", calibration;
  int group_size = 0, lorc_rank = 0, lkd_steps = 0, calibration_windows = 32;
  bool keep_head = false;
};

// Adds --method, --group-size, --lorc-rank, --lkd-steps, --keep-head, --calibration and
// --calibration-windows to cmd (the scheme's own flag is the caller's).
void add_quant_flags(CLI::App* cmd, quant_flags& f);

// w's linears quantized as f asks. scheme_flag names the scheme's option in messages.
// Calibration, when the method needs it: f.calibration's text, else the training part of
// corpus_cfg's corpus (a checkpoint's run), else text sampled from w itself. zf::error naming
// the option or file for an unknown scheme or method, a group size that does not divide a
// layer, or calibration text too short.
std::shared_ptr<lm_quant> quantize_weights(const lm_weights& w, const tokenizer& tok,
                                           const quant_flags& f, const std::string& scheme_flag,
                                           const run_config* corpus_cfg);

void add_quantize_subcommand(CLI::App& app);
// Runs quantize if it was parsed: true if it ran. Throws zf::error on failure.
bool run_quantize_subcommand();

}  // namespace zf
