#include "pipelines/serve_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <mutex>
#include <thread>

#include "actors/engine.hpp"
#include "actors/gateway.hpp"
#include "pipelines/config_flags.hpp"
#include "pipelines/graph_run.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/stages_serve.hpp"
#include "runtime/error.hpp"
#include "runtime/serve_client.hpp"
#include "storage/lm_loader.hpp"

namespace fs = std::filesystem;

namespace zf {
namespace {

// --checkpoint / --hf and the engine and server keys of the config schema (--config, --set,
// and one flag per key: --token-budget, --batch-invariant, --host, ...).
struct model_args {
  std::string checkpoint, hf, data_dir;
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
  c->add_option("--data-dir", m.data_dir, "folder with the gpt2/ tokenizer (for --checkpoint)");
  add_config_flags(c, sections, m.config);
}

std::unique_ptr<serve::completion_backend> open_engine(const model_args& m, const run_config& cfg) {
  auto [w, tok] = load_serving_model(m.checkpoint, m.hf, m.data_dir);
  return actors::make_engine(std::move(w), std::move(tok), cfg.engine);
}

// Prints the address the server listens on (scripts and tests read this line).
struct announce : stage {
  in_port<endpoint> at = input<endpoint>("at");
  std::string model;
  int context = 0;
  void start(stage_context& ctx) override {
    ctx.on(at, [this](const std::shared_ptr<const endpoint>& e) {
      std::cerr << fmt::format(
          "zeroflow: serving {} (context {}) on http://{}:{}/v1  (Ctrl-C "
          "stops)\n",
          model, context, e->host, e->port);
    });
  }
  void inputs_closed(stage_context&) override {}  // runs until the server stops
};

// The serving graph: engine -> gateway (-> announce), run until Ctrl-C / SIGTERM.
int run_serve() {
  const run_config cfg = load_config(g_model.config.file, g_model.config.overrides());
  auto [w, tok] = load_serving_model(g_model.checkpoint, g_model.hf, g_model.data_dir);
  actors::gateway_options go;
  go.host = cfg.server.host;
  go.port = cfg.server.port;
  go.io_threads = cfg.server.io_threads;
  go.enable_weight_updates = cfg.server.enable_weight_updates;
  go.api_keys = cfg.server.api_keys;
  graph g;
  const std::string model = w.cfg.name;
  const int context = w.cfg.max_positions;
  auto& engine = g.add<stages::engine_stage>(
      "engine", std::make_shared<const lm_weights>(std::move(w)), std::move(tok), cfg.engine);
  auto& http = g.add<stages::gateway_stage>("gateway", go);
  auto& say = g.add<announce>("announce");
  say.model = model;
  say.context = context;
  g.connect(engine.backend, http.backend);
  g.connect(http.listening, say.at);
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
  r.sampling = {g_gen.temperature, g_gen.top_k, g_gen.top_p, g_gen.seed};
  std::cout << g_gen.prompt << std::flush;
  serve::complete(*engine, std::move(r),
                  [](const std::string& t) { std::cout << t << std::flush; });
  std::cout << std::endl;
  return 0;
}

}  // namespace

std::pair<lm_weights, tokenizer> load_serving_model(const std::string& checkpoint,
                                                    const std::string& hf_dir,
                                                    const std::string& ddir) {
  if (checkpoint.empty() == hf_dir.empty())
    fail("give exactly one of --checkpoint DIR and --hf DIR");
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

void add_serve_subcommands(CLI::App& app) {
  g_serve_cmd = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server (continuous batching, Dynamic SplitFuse, paged KV)");
  add_model_options(g_serve_cmd, g_model, {"engine", "server"});

  g_gen_cmd =
      app.add_subcommand("generate", "generate text from a model (streamed, on the engine)");
  add_model_options(g_gen_cmd, g_model, {"engine"});
  g_gen_cmd->add_option("--prompt", g_gen.prompt, "prompt text")->required();
  g_gen_cmd->add_option("--max-tokens", g_gen.max_tokens, "tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  g_gen_cmd->add_option("--temperature", g_gen.temperature, "0 = greedy")
      ->check(CLI::Range(0.0f, 100.0f));
  g_gen_cmd->add_option("--top-k", g_gen.top_k, "0 = off")->check(CLI::Range(0, 1 << 24));
  g_gen_cmd->add_option("--top-p", g_gen.top_p, "1 = off")->check(CLI::Range(0.0f, 1.0f));
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
