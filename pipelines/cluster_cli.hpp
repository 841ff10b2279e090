#pragma once
// The launch commands:
//   zeroflow launch --nproc N -- train ...          N ranks on this host (pipelines/launch)
//   zeroflow launch --nodes h1:p1,h2:p2 --token FILE --nproc-per-node K [--max-restarts R]
//                   [--min-nodes M] -- train ...    ranks on node agents (actors/cluster_launcher)
//   zeroflow node --listen HOST:PORT --token FILE   one node agent (actors/node_agent), until
//                                                   Ctrl-C / SIGTERM
namespace CLI {
class App;
}

namespace zf {

void add_cluster_subcommands(CLI::App& app);
// Runs launch or node if one was parsed: the exit code, or -1 when neither was. Throws zf::error.
int run_cluster_subcommands();

}  // namespace zf
