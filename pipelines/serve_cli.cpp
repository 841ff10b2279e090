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
#include "pipelines/pipeline.hpp"
#include "runtime/error.hpp"
#include "runtime/serve_client.hpp"
#include "storage/lm_loader.hpp"

namespace fs = std::filesystem;

namespace zf {
namespace {

struct model_args {
  std::string checkpoint, hf, data_dir;
  actors::engine_options engine;
  std::string policy = "split_fuse";
};

struct serve_args {
  std::string host = "127.0.0.1";
  int port = 8000, io_threads = 2;
  bool enable_weight_updates = false;
};

struct gen_args {
  std::string prompt;
  int max_tokens = 64, top_k = 0;
  float temperature = 1.0f, top_p = 1.0f;
  uint64_t seed = 0;
};

model_args g_model;
serve_args g_serve;
gen_args g_gen;
CLI::App* g_serve_cmd = nullptr;
CLI::App* g_gen_cmd = nullptr;
std::atomic<bool> g_stop{false};

extern "C" void on_serve_sigint(int) {
  g_stop = true;
}

void add_model_options(CLI::App* c, model_args& m, bool engine_knobs) {
  c->add_option("--checkpoint", m.checkpoint,
                "zeroflow checkpoint: step folder, checkpoints/ root or run folder");
  c->add_option("--hf", m.hf,
                "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
  c->add_option("--data-dir", m.data_dir, "folder with the gpt2/ tokenizer (for --checkpoint)");
  c->add_option("--threads", m.engine.threads, "compute threads; 0 = all cores");
  if (!engine_knobs) return;
  c->add_option("--policy", m.policy, "split_fuse (Dynamic SplitFuse) or static_batch (baseline)")
      ->check(CLI::IsMember({"split_fuse", "static_batch"}))
      ->capture_default_str();
  c->add_option("--token-budget", m.engine.token_budget, "tokens per forward pass")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  c->add_option("--max-seqs", m.engine.max_seqs, "running sequences at most")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  c->add_option("--block-size", m.engine.block_size, "tokens per KV block")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  c->add_option("--kv-blocks", m.engine.num_blocks, "KV blocks in the pool; 0 = automatic")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("!--no-prefix-caching", m.engine.prefix_caching,
              "compute every prompt in full (no KV sharing of common prefixes across requests)");
  c->add_option("--max-queue", m.engine.max_queue, "waiting requests before 429")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
}

std::unique_ptr<serve::completion_backend> open_engine(model_args& m) {
  auto [w, tok] = load_serving_model(m.checkpoint, m.hf, m.data_dir);
  m.engine.policy = m.policy == "static_batch" ? actors::engine_options::policy_kind::static_batch
                                               : actors::engine_options::policy_kind::split_fuse;
  return actors::make_engine(std::move(w), std::move(tok), m.engine);
}

int run_serve() {
  auto engine = open_engine(g_model);
  actors::gateway_options go;
  go.host = g_serve.host;
  go.port = g_serve.port;
  go.io_threads = g_serve.io_threads;
  go.enable_weight_updates = g_serve.enable_weight_updates;
  actors::gateway gw(*engine, go);
  std::cerr << fmt::format("zeroflow: serving {} (context {}) on http://{}:{}/v1  (Ctrl-C stops)\n",
                           engine->model_name(), engine->context_length(), go.host, gw.port());
  auto prev = std::signal(SIGINT, on_serve_sigint);
  std::signal(SIGTERM, on_serve_sigint);
  std::thread watch([&] {
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gw.stop();
  });
  gw.wait();
  g_stop = true;
  watch.join();
  std::signal(SIGINT, prev);
  std::cerr << "zeroflow: server stopped\n";
  return 0;
}

int run_generate() {
  auto engine = open_engine(g_model);
  serve::completion_request r;
  r.prompt = engine->encode(g_gen.prompt);
  r.max_tokens = g_gen.max_tokens;
  r.sampling = {g_gen.temperature, g_gen.top_k, g_gen.top_p, g_gen.seed};
  std::cout << g_gen.prompt << std::flush;
  serve::complete(*engine, std::move(r), [](const std::string& t) { std::cout << t << std::flush; });
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
  add_model_options(g_serve_cmd, g_model, true);
  g_serve_cmd->add_option("--host", g_serve.host, "address to listen on")->capture_default_str();
  g_serve_cmd->add_option("--port", g_serve.port, "port (0: any free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  g_serve_cmd->add_option("--io-threads", g_serve.io_threads, "HTTP threads")
      ->check(CLI::Range(1, 64));
  g_serve_cmd->add_flag("--enable-weight-updates", g_serve.enable_weight_updates,
                        "allow POST /v1/update_weights_from_disk (it reads files on this machine) "
                        "also when --host is not a loopback address");

  g_gen_cmd =
      app.add_subcommand("generate", "generate text from a model (streamed, on the engine)");
  add_model_options(g_gen_cmd, g_model, false);
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
