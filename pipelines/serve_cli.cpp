#include "pipelines/serve_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>

#include "actors/console_server.hpp"
#include "actors/engine.hpp"
#include "pipelines/config_flags.hpp"
#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/pipeline.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/lm_bf16.hpp"
#include "runtime/serve/serve_client.hpp"
#include "storage/fs_util.hpp"
#include "storage/gguf_model.hpp"
#include "storage/lm_loader.hpp"

namespace fs = std::filesystem;

namespace zf {
namespace {

// --checkpoint / --hf and the engine and server keys of the config schema (--config, --set,
// and one flag per key: --token-budget, --batch-invariant, --host, ...).
struct model_args {
  std::string checkpoint, hf, data_dir, gguf;
  config_args config;
};

struct gen_args {
  std::string prompt;
  int max_tokens = 64, top_k = 0;
  float temperature = 1.0f, top_p = 1.0f;
  uint64_t seed = 0;
};

model_args g_model;
gen_args g_gen;
std::string g_graph_file;
std::string g_run_dir;
CLI::Option* g_run_dir_opt = nullptr;
bool g_console = false;
std::string g_console_token;
CLI::App* g_serve_cmd = nullptr;
CLI::App* g_gen_cmd = nullptr;
std::atomic<bool> g_stop{false};

extern "C" void on_serve_sigint(int) {
  g_stop = true;
}

void add_model_options(CLI::App* c, model_args& m, const std::vector<std::string>& sections) {
  c->add_option("--checkpoint", m.checkpoint,
                "zeroflow checkpoint: step folder, checkpoints/ root or run folder");
  c->add_option("--hf", m.hf,
                "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
  c->add_option("--gguf", m.gguf,
                "GGUF file (llama.cpp's GPT-2 or Llama layout, its tokenizer inside)");
  c->add_option("--data-dir", m.data_dir, "folder with the gpt2/ tokenizer (for --checkpoint)");
  add_config_flags(c, sections, m.config);
}

std::unique_ptr<serve::completion_backend> open_engine(const model_args& m, const run_config& cfg) {
  auto [w, tok] = load_serving_model(m.checkpoint, m.hf, m.data_dir, m.gguf);
  // bf16 in place here (no second copy); the engine would convert a copy otherwise
  to_serving_weights(w, parse_weight_dtype(cfg.engine.dtype, "--dtype"), "--dtype");
  return actors::make_engine(std::move(w), std::move(tok), cfg.engine);
}

// The serving graph: the built-in one (examples/graphs/serve.toml: engine -> gateway ->
// announce) or --graph FILE, run until Ctrl-C / SIGTERM. --checkpoint / --hf give the engines
// whose options name no model their model, --run-dir the gateways' run folder.
int run_serve() {
  const auto overrides = g_model.config.overrides();
  const run_config cfg = load_config(g_model.config.file, overrides);
  const std::string text =
      g_graph_file.empty() ? default_serve_graph() : storage::read_text_file(g_graph_file);
  const std::string source =
      g_graph_file.empty() ? "examples/graphs/serve.toml (built in)" : g_graph_file;
  stage_defaults d{g_model.checkpoint, g_model.hf, g_model.data_dir};
  d.stop = &g_stop;  // the gateway's run.json: a stop asked for is a clean end
  if (g_run_dir_opt->count() > 0) d.serve_run_dir = g_run_dir;  // else runs/serve-<time>
  if (g_console) {  // the folder the run folder is in (runs/ by default)
    actors::console_options co;
    const std::string own = d.serve_run_dir.value_or("");
    co.runs = own.empty() ? "runs" : fs::absolute(own).parent_path().string();
    co.token = actors::console_token(g_console_token);
    d.console = actors::make_console_site(co, "/console");
  }
  const stage_registry reg = builtin_stages(d);
  graph g = build_graph(text, source, cfg, reg, overrides);
  auto prev = std::signal(SIGINT, on_serve_sigint);
  std::signal(SIGTERM, on_serve_sigint);
  run_graph(g, {.stop = &g_stop});
  std::signal(SIGINT, prev);
  std::cerr << "zeroflow: server stopped\n";
  return 0;
}

int run_generate() {
  const run_config cfg = load_config(g_model.config.file, g_model.config.overrides());
  auto engine = open_engine(g_model, cfg);
  serve::completion_request r;
  r.prompt = engine->encode(g_gen.prompt);
  r.max_tokens = g_gen.max_tokens;
  r.sampling.temperature = g_gen.temperature;
  r.sampling.top_k = g_gen.top_k;
  r.sampling.top_p = g_gen.top_p;
  r.sampling.seed = g_gen.seed;
  std::cout << g_gen.prompt << std::flush;
  serve::complete(*engine, std::move(r),
                  [](const std::string& t) { std::cout << t << std::flush; });
  std::cout << std::endl;
  return 0;
}

}  // namespace

std::pair<lm_weights, tokenizer> load_serving_model(const std::string& checkpoint,
                                                    const std::string& hf_dir,
                                                    const std::string& ddir,
                                                    const std::string& gguf) {
  if (int(!checkpoint.empty()) + int(!hf_dir.empty()) + int(!gguf.empty()) != 1)
    fail("give exactly one of --checkpoint DIR, --hf DIR and --gguf FILE");
  if (!gguf.empty()) {
    auto g = storage::read_gguf_model(gguf, true);  // GPT-2 or Llama, matrices in place
    return {std::move(g.weights), std::move(g.tok)};
  }
  if (!hf_dir.empty()) {
    auto w = load_hf_weights(hf_dir);
    auto tj = fs::path(hf_dir) / "tokenizer.json";
    auto tok = tokenizer::load_hf(tj);
    if (tok.vocab_size() > w.cfg.vocab_size)
      fail("{}: {} tokens but the model's vocabulary has {}", tj.string(), tok.vocab_size(),
           w.cfg.vocab_size);
    return {std::move(w), std::move(tok)};
  }
  auto [w, cfg] = storage::load_checkpoint_model(checkpoint);
  if (!ddir.empty()) cfg.data.data_dir = ddir;
  return {std::move(w), open_tokenizer(cfg).first};  // the run's own: GPT-2 or tokenizer.json
}

namespace {
// A number in [lo, hi]; unlike CLI::Range it refuses NaN (every comparison with NaN is false).
CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        double v = 0;
        try {
          std::size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) return "expected a number, got " + text;
        } catch (const std::exception&) {
          return "expected a number, got " + text;
        }
        if (!(v >= lo && v <= hi))
          return "expected a number in [" + CLI::detail::to_string(lo) + ", " +
                 CLI::detail::to_string(hi) + "], got " + text;
        return {};
      },
      "FLOAT in [" + CLI::detail::to_string(lo) + " - " + CLI::detail::to_string(hi) + "]");
}
}  // namespace

void add_serve_subcommands(CLI::App& app) {
  g_serve_cmd = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server (continuous batching, Dynamic SplitFuse, paged KV)");
  add_model_options(g_serve_cmd, g_model, {"engine", "server"});
  g_serve_cmd
      ->add_option("--graph", g_graph_file,
                   "run this graph file instead of the built-in engine -> gateway "
                   "(examples/graphs/serve.toml; see `zeroflow graph`)")
      ->check(CLI::ExistingFile);
  g_run_dir_opt = g_serve_cmd->add_option(
      "--run-dir", g_run_dir,
      "run folder the server records in: metrics.jsonl every server.record_every_s seconds and "
      "run.json (default runs/serve-<time>; \"\" = no recording)");
  g_serve_cmd->add_flag("--console", g_console,
                        "also serve the live console (every run beside this server's run folder) "
                        "under /console");
  g_serve_cmd
      ->add_option("--console-token", g_console_token,
                   "file with the console's token (else ZEROFLOW_CONSOLE_TOKEN); needed when "
                   "--host is not loopback")
      ->check(CLI::ExistingFile);

  g_gen_cmd =
      app.add_subcommand("generate", "generate text from a model (streamed, on the engine)");
  add_model_options(g_gen_cmd, g_model, {"engine"});
  g_gen_cmd->add_option("--prompt", g_gen.prompt, "prompt text")->required();
  g_gen_cmd->add_option("--max-tokens", g_gen.max_tokens, "tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  g_gen_cmd->add_option("--temperature", g_gen.temperature, "0 = greedy")->check(finite_in(0, 100));
  g_gen_cmd->add_option("--top-k", g_gen.top_k, "0 = off")->check(CLI::Range(0, 1 << 24));
  g_gen_cmd->add_option("--top-p", g_gen.top_p, "1 = off")->check(finite_in(0, 1));
  g_gen_cmd->add_option("--seed", g_gen.seed, "sampling seed");
}

bool run_serve_subcommands() {
  if (g_serve_cmd && *g_serve_cmd) {
    run_serve();
    return true;
  }
  if (g_gen_cmd && *g_gen_cmd) {
    run_generate();
    return true;
  }
  return false;
}

}  // namespace zf
