#pragma once
// `zeroflow console [--runs DIR] [--host 127.0.0.1] [--port 8265] [--token FILE]`: the live
// console (actors/console_server.hpp) over a runs folder, until Ctrl-C / SIGTERM. Prints
// "console: http://HOST:PORT/" on stdout once it listens (port 0 picks a free one).
namespace CLI {
class App;
}

namespace zf {

void add_console_subcommand(CLI::App& app);
// Runs the console if it was parsed: true if it ran. Throws zf::error on failure.
bool run_console_subcommand();

}  // namespace zf
