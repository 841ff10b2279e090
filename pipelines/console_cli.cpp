#include "pipelines/console_cli.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <thread>

#include "actors/console_server.hpp"

namespace zf {
namespace {

actors::console_options g_opts;
std::string g_token_file;
CLI::App* g_cmd = nullptr;
std::atomic<bool> g_stop{false};

extern "C" void on_console_signal(int) {
  g_stop = true;
}

}  // namespace

void add_console_subcommand(CLI::App& app) {
  g_cmd = app.add_subcommand("console", "the live web console over every run in a runs folder");
  g_cmd->add_option("--runs", g_opts.runs, "the folder whose subfolders are runs")
      ->capture_default_str();
  g_cmd->add_option("--host", g_opts.host, "address to listen on (not loopback: needs a token)")
      ->capture_default_str();
  g_cmd->add_option("--port", g_opts.port, "port (0: a free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  g_cmd
      ->add_option("--token", g_token_file,
                   "file holding the token every request must carry (else "
                   "ZEROFLOW_CONSOLE_TOKEN)")
      ->check(CLI::ExistingFile);
}

bool run_console_subcommand() {
  if (!g_cmd || !*g_cmd) return false;
  g_opts.token = actors::console_token(g_token_file);
  actors::console_server server(g_opts);
  std::cout << "console: http://" << g_opts.host << ":" << server.port() << "/" << std::endl;
  auto prev_int = std::signal(SIGINT, on_console_signal);
  auto prev_term = std::signal(SIGTERM, on_console_signal);
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::signal(SIGINT, prev_int);
  std::signal(SIGTERM, prev_term);
  server.stop();
  std::cerr << "zeroflow: console stopped\n";
  return true;
}

}  // namespace zf
