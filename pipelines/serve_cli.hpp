#pragma once
// `zeroflow serve` (the OpenAI-compatible server) and `zeroflow generate` (one prompt, streamed
// to the terminal), both on the serving engine (actors/engine), from a zeroflow checkpoint or a
// Hugging Face model folder.
//   serve    --checkpoint DIR | --hf DIR  [--host 127.0.0.1] [--port 8000]
//            [--enable-weight-updates] [engine options] [--graph FILE] [--run-dir DIR]
//            (records the server in DIR, default runs/serve-<time>: metrics.jsonl, run.json)
//            (the graph of examples/graphs/serve.toml, built in, or FILE: pipelines/graph_toml)
//   generate --checkpoint DIR | --hf DIR  --prompt TEXT [--max-tokens N] [sampling options]
#include <filesystem>
#include <string>
#include <utility>

#include "runtime/model/lm_weights.hpp"
#include "runtime/text/tokenizer.hpp"

namespace CLI {
class App;
}

namespace zf {

// Weights and tokenizer of a zeroflow checkpoint (GPT-2 tokenizer from data_dir, "" = the
// build's default), of a Hugging Face folder (tokenizer.json in it) or of a GGUF file (GPT-2,
// its tokenizer inside; weights read as fp32). Exactly one of the three paths must be given.
std::pair<lm_weights, tokenizer> load_serving_model(const std::string& checkpoint,
                                                    const std::string& hf_dir,
                                                    const std::string& data_dir,
                                                    const std::string& gguf = "");

void add_serve_subcommands(CLI::App& app);
// Runs serve or generate if one was parsed: true if it ran. Throws zf::error on failure.
bool run_serve_subcommands();

}  // namespace zf
