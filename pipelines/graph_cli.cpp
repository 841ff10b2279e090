#include "pipelines/graph_cli.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "pipelines/config_flags.hpp"
#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "storage/fs_util.hpp"

namespace zf {
namespace {

struct graph_args {
  std::string file;
  config_args config;  // --config and --set only: sections' flags would clash (threads, ...)
  stage_defaults model;
};

graph_args g_args;
CLI::App* g_run = nullptr;
CLI::App* g_check = nullptr;
CLI::App* g_types = nullptr;
std::atomic<bool> g_stop{false};

extern "C" void on_graph_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // second Ctrl-C: leave now
  const char msg[] = "\nzeroflow: stopping the graph; Ctrl-C again to abort\n";
  [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
}

graph build(const graph_args& a) {
  const auto overrides = a.config.overrides();
  const run_config cfg = load_config(a.config.file, overrides);
  return build_graph(storage::read_text_file(a.file), a.file, cfg, builtin_stages(a.model),
                     overrides);
}

void add_file_options(CLI::App* c, graph_args& a) {
  c->add_option("file", a.file, "graph file (TOML: [[stage]] and [[connect]] sections)")
      ->required()
      ->check(CLI::ExistingFile);
  add_config_flags(c, {}, a.config);
}

int run_types() {
  const stage_registry reg = builtin_stages();
  for (const std::string& t : reg.types()) {
    const stage_type* st = reg.find(t);
    std::cout << fmt::format("{}\n  {}\n", t, st->help);
    std::string opts;
    for (const std::string& o : st->options) opts += (opts.empty() ? "" : ", ") + o;
    if (!opts.empty()) std::cout << "  options: " << opts << "\n";
  }
  return 0;
}

}  // namespace

void add_graph_subcommand(CLI::App& app) {
  auto* g = app.add_subcommand("graph", "run or check a graph of stages described in TOML");
  g->require_subcommand(1);
  g_run = g->add_subcommand("run", "run a graph file until every stage is done (or Ctrl-C)");
  add_file_options(g_run, g_args);
  g_run->add_option("--checkpoint", g_args.model.checkpoint,
                    "model of the engine stages that name none: a zeroflow checkpoint");
  g_run->add_option("--hf", g_args.model.hf,
                    "model of the engine stages that name none: a Hugging Face folder");
  g_run->add_option("--data-dir", g_args.model.data_dir,
                    "folder with the gpt2/ tokenizer (for --checkpoint)");
  g_check = g->add_subcommand(
      "check", "build and check a graph file (no weights read); print its stages and connections");
  add_file_options(g_check, g_args);
  g_types = g->add_subcommand("types", "list the stage types a graph file can use");
}

bool run_graph_subcommand() {
  if (g_types && *g_types) {
    run_types();
    return true;
  }
  if (g_check && *g_check) {
    graph g = build(g_args);
    std::cout << g_args.file << ": ok\n" << describe(g);
    return true;
  }
  if (!g_run || !*g_run) return false;
  graph g = build(g_args);
  auto prev_int = std::signal(SIGINT, on_graph_sigint);
  auto prev_term = std::signal(SIGTERM, on_graph_sigint);
  run_graph(g, {.stop = &g_stop});
  std::signal(SIGINT, prev_int);
  std::signal(SIGTERM, prev_term);
  std::cerr << fmt::format("zeroflow: graph {} {}\n", g_args.file, g_stop ? "stopped" : "finished");
  return true;
}

}  // namespace zf
