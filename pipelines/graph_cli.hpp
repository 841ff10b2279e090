#pragma once
// `zeroflow graph`: graphs from TOML files (pipelines/graph_toml.hpp) with the built-in stage
// types.
//   graph run FILE   [--config F] [--set key=value]... [--checkpoint DIR | --hf DIR]
//                    runs the graph until every stage is done or Ctrl-C / SIGTERM
//   graph check FILE [--config F] [--set key=value]...
//                    builds and checks it (no weights read), prints stages and connections
//   graph types      the registered stage types, their ports and options
namespace CLI {
class App;
}

namespace zf {

void add_graph_subcommand(CLI::App& app);
// Runs `graph ...` if it was parsed: true if it ran. Throws zf::error on failure.
bool run_graph_subcommand();

}  // namespace zf
