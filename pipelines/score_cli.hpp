#pragma once
// `zeroflow score`: per-token log-probabilities of texts under a model, on its training forward
// (score mode, batched), from a zeroflow checkpoint or a Hugging Face folder.
//   score --checkpoint DIR | --hf DIR --input FILE.jsonl [--batch N] [--max-len N]
//         lines {"text": ...} or {"prompt": ..., "completion": ...}; one JSON line out per line
//   score --checkpoint DIR | --hf DIR --input FILE.txt --ppl [--window N] [--stride N]
namespace CLI {
class App;
}

namespace zf {

void add_score_subcommand(CLI::App& app);
// Runs score if it was parsed: true if it ran. Throws zf::error on failure.
bool run_score_subcommand();

}  // namespace zf
