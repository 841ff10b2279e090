#include "pipelines/cli.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <ctime>
#include <iostream>
#include <iterator>

#include "actors/console_server.hpp"
#include "actors/engine_remote.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/threads.hpp"
#include "pipelines/ckpt_cli.hpp"
#include "pipelines/cluster_cli.hpp"
#include "pipelines/console_cli.hpp"
#include "pipelines/data_cli.hpp"
#include "pipelines/graph_cli.hpp"
#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/quantize_cli.hpp"
#include "pipelines/rl_cli.hpp"
#include "pipelines/score_cli.hpp"
#include "pipelines/serve_cli.hpp"
#include "pipelines/tune_cli.hpp"
#include "runtime/core/error.hpp"
#include "runtime/text/text_stream.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "storage/token_shard.hpp"

namespace fs = std::filesystem;

namespace zf {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // second Ctrl-C: leave now
  const char msg[] =
      "\nzeroflow: stopping after this step (checkpoint will be saved); Ctrl-C again to abort\n";
  [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
}

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

// The most recently written run under runs/ that has a checkpoint.
fs::path latest_run(const fs::path& runs) {
  fs::path best;
  fs::file_time_type best_t{};
  std::error_code ec;
  for (auto& e : fs::directory_iterator(runs, ec)) {
    auto l = e.path() / "checkpoints" / "latest";
    if (fs::exists(l) && (best.empty() || fs::last_write_time(l) > best_t)) {
      best = e.path();
      best_t = fs::last_write_time(l);
    }
  }
  if (best.empty()) fail("--resume latest: no run with a checkpoint under {}", runs.string());
  return best;
}

// train --console: the console over the run folder's parent (runs/ by default) on loopback,
// for the run's life. A console that cannot start (its port taken) is said, and training goes on.
std::unique_ptr<actors::console_server> console_server_for(const std::string& run_dir, int port) {
  if (port < 0) return nullptr;
  actors::console_options o;
  o.runs = fs::absolute(run_dir).parent_path().string();
  o.port = port;
  try {
    auto s = std::make_unique<actors::console_server>(o);
    std::cerr << fmt::format("zeroflow: console on http://127.0.0.1:{}/#run={}\n", s->port(),
                             fs::path(run_dir).filename().string());
    return s;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("zeroflow: {} (training goes on without the console)\n", e.what());
    return nullptr;
  }
}

// `zeroflow train`: the training graph (examples/graphs/train.toml built in, or --graph FILE)
// with the command line's run folder, resume point, early stop and Ctrl-C flag.
int cmd_train(const std::string& config_file, std::vector<std::string> sets, std::string out,
              const std::string& resume, bool quiet, int stop_after, const std::string& init_hf,
              const std::string& graph_file, int console_port) {
  // first, so a Ctrl-C during set-up also stops cleanly (after the first step)
  auto prev = std::signal(SIGINT, on_sigint);
  if (!init_hf.empty()) {  // before --set, so an explicit data.tokenizer still wins
    // absolute: the run's config (and so its checkpoints) must find the tokenizer from anywhere
    const std::string dir = fs::absolute(init_hf).lexically_normal().string();
    sets.insert(sets.begin(), {"model.init_hf=" + dir, "data.tokenizer=" + dir});
  }
  if (resume == "auto" && out.empty())
    fail(
        "--resume auto: give the run folder with --out DIR (auto continues DIR's last "
        "checkpoint, or starts a fresh run there when it has none)");
  const run_config cfg = load_config(config_file, sets);
  stage_defaults d;
  d.train_resume = resume;
  d.train_out = !out.empty()         ? out
                : resume == "latest" ? latest_run("runs").string()
                                     : "runs/train-" + timestamp();
  d.stop_at_step = stop_after;
  d.stop = &g_stop;
  d.quiet = quiet;
  const std::string text =
      graph_file.empty() ? default_train_graph() : storage::read_text_file(graph_file);
  graph g = build_graph(text, graph_file.empty() ? "train graph" : graph_file, cfg,
                        builtin_stages(d), sets);
  const auto console = console_server_for(d.train_out, console_port);
  run_graph(g);
  std::signal(SIGINT, prev);
  return 0;
}

int cmd_tokenize(const std::string& name, const std::string& input, const std::string& output,
                 bool ids, const std::string& ddir, bool force) {
  if (name != "gpt2") fail("--tokenizer: expected gpt2, got {}", name);
  run_config cfg;
  cfg.data.data_dir = ddir;
  tokenizer tok = tokenizer::load_gpt2(data_dir(cfg) / "gpt2");
  if (ids) {
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    auto v = tok.encode(text);
    for (std::size_t i = 0; i < v.size(); ++i) std::cout << (i ? " " : "") << v[i];
    std::cout << "\n";
    return 0;
  }
  if (input.empty() || output.empty())
    fail("tokenize: give --input FILE and --output FILE, or --ids");
  if (fs::exists(output)) fail("tokenize: {} exists; refusing to overwrite it", output);
  std::string text = storage::read_text_file(input);
  const std::string warning =
      check_training_text(text, input, force ? 1.0 : run_config{}.data.max_invalid_utf8,
                          "Pass --force to tokenize it anyway.");
  if (!warning.empty()) std::cerr << "zeroflow: warning: " << warning << "\n";
  auto v = tok.encode(text);
  storage::write_token_shard(output, v, static_cast<uint32_t>(tok.vocab_size()));
  std::cerr << fmt::format("{}: {} bytes -> {} tokens -> {}\n", input, text.size(), v.size(),
                           output);
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"zeroflow: train, align, compress and serve transformer language models"};
  app.require_subcommand(1);

  std::string config_file, out, resume, ddir, init_hf;
  std::vector<std::string> sets;
  bool quiet = false;
  int stop_after = 0;
  auto* train =
      app.add_subcommand("train", "train (or fine-tune) a GPT-2 or Llama on the configured corpus");
  train->add_option("--config", config_file, "TOML config file (see `zeroflow config`)")
      ->check(CLI::ExistingFile);
  train->add_option("--set", sets, "override one key, e.g. --set train.steps=100")
      ->allow_extra_args(false);
  train->add_option("--out", out, "run folder (default runs/train-<time>)");
  train->add_option("--resume", resume,
                    "continue from `latest` or a checkpoint folder; `auto` (with --out): from "
                    "--out's last checkpoint if it has one, else start there fresh");
  train
      ->add_option("--init-hf", init_hf,
                   "fine-tune a Hugging Face GPT-2 or Llama folder (its weights, config and "
                   "tokenizer.json)")
      ->check(CLI::ExistingDirectory);
  train->add_flag("--quiet", quiet, "no progress line (metrics.jsonl only)");
  bool console = false;
  int console_port = 8265;
  train->add_flag("--console", console, "also serve the live console on loopback while training");
  train->add_option("--console-port", console_port, "the console's port (0: a free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  std::string train_graph;
  train->add_option("--graph", train_graph, "run this graph file instead of the built-in one")
      ->check(CLI::ExistingFile);
  train
      ->add_option("--stop-after", stop_after,
                   "stop (with a checkpoint) after this step; resume later")
      ->check(CLI::NonNegativeNumber);

  add_serve_subcommands(app);
  add_graph_subcommand(app);
  add_score_subcommand(app);
  add_quantize_subcommand(app);
  add_rl_subcommands(app);
  add_console_subcommand(app);

  std::string tname = "gpt2", input, output;
  bool ids = false, force = false;
  auto* tokc = app.add_subcommand("tokenize", "text -> token shard, or ids on stdout");
  tokc->add_option("--tokenizer", tname, "tokenizer name")->capture_default_str();
  tokc->add_option("--input", input, "UTF-8 text file");
  tokc->add_option("--output", output, "token shard to write");
  tokc->add_flag("--ids", ids, "read text on stdin, print ids separated by spaces");
  tokc->add_option("--data-dir", ddir, "folder with gpt2/ tokenizer files");
  tokc->add_flag("--force", force,
                 fmt::format("tokenize even a file of which more than {}% is not UTF-8 text "
                             "(binary, another encoding)",
                             100 * run_config{}.data.max_invalid_utf8));

  add_cluster_subcommands(app);
  add_data_subcommand(app);

  add_ckpt_subcommand(app);

  // Started by an RLHF run with rlhf.rollout_placement = "process" (actors/engine_remote.hpp).
  std::string engine_dir;
  auto* engine_host = app.add_subcommand("engine-host", "")->group("");  // hidden
  engine_host->add_option("--rendezvous", engine_dir, "the run's private rendezvous folder")
      ->required();

  add_tune_subcommand(app);
  auto* conf = app.add_subcommand("config", "print the full configuration as TOML");
  conf->add_option("--config", config_file, "TOML config file")->check(CLI::ExistingFile);
  conf->add_option("--set", sets, "override one key");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    // training measures its few GEMM shapes at their first use; serving and the rest only read
    // the table (a first request must not wait for a measurement)
    configure_gemm_tuning_from_env(*train ? kernels::gemm_tuning::lazy
                                          : kernels::gemm_tuning::cached);
    if (run_tune_subcommand()) return 0;
    if (*train)
      return cmd_train(config_file, sets, out, resume, quiet, stop_after, init_hf, train_graph,
                       console ? console_port : -1);
    if (run_serve_subcommands()) return 0;
    if (run_graph_subcommand()) return 0;
    if (run_score_subcommand()) return 0;
    if (run_quantize_subcommand()) return 0;
    if (run_rl_subcommands()) return 0;
    if (run_console_subcommand()) return 0;
    if (run_data_subcommand()) return 0;
    if (*tokc) return cmd_tokenize(tname, input, output, ids, ddir, force);
    if (run_ckpt_subcommand()) return 0;
    if (const int code = run_cluster_subcommands(); code >= 0) return code;
    if (*engine_host) return actors::run_engine_host(engine_dir);
    if (*conf) {
      std::cout << to_toml(load_config(config_file, sets));
      return 0;
    }
  } catch (const error& e) {
    std::cerr << "zeroflow: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "zeroflow: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace zf
