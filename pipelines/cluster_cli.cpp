#include "pipelines/cluster_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <thread>

#include "actors/cluster_launcher.hpp"
#include "actors/cluster_protocol.hpp"
#include "actors/cluster_tls.hpp"
#include "actors/node_agent.hpp"
#include "pipelines/launch.hpp"
#include "runtime/cluster/job_spec.hpp"
#include "runtime/core/error.hpp"

namespace zf {
namespace {

// --tls-cert, --tls-key, --tls-ca of `launch --nodes` and `node` (actors/cluster_tls).
struct tls_flags {
  std::string cert, key, ca;
  bool any() const { return !cert.empty() || !key.empty() || !ca.empty(); }
  actors::cluster_tls load() const { return actors::load_cluster_tls(cert, key, ca); }
};

struct launch_flags {
  int nproc = 2, master_port = 0;
  std::string nodes, token_file;
  tls_flags tls;
  int nproc_per_node = 1, max_restarts = 0, min_nodes = 0;
  std::vector<std::string> args;
};
launch_flags g_launch;
std::string g_listen = "127.0.0.1:7411", g_node_token;
tls_flags g_node_tls;
CLI::App* g_launch_cmd = nullptr;
CLI::App* g_node_cmd = nullptr;
std::atomic<bool> g_stop{false};

extern "C" void on_cluster_signal(int) {
  g_stop = true;
}

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

// The run folder every rank writes to: --out's value, or one the launcher picks and adds (every
// attempt must write, and resume, in the same folder).
std::string run_folder(std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--out" && i + 1 < args.size()) return args[i + 1];
    if (args[i].starts_with("--out=")) return args[i].substr(6);
  }
  std::string out = fmt::format("runs/{}-{}", args.empty() ? "job" : args[0], timestamp());
  args.insert(args.end(), {"--out", out});
  return out;
}

// Runs `body` in an actor system set up for the cluster (TLS when given) with Ctrl-C and SIGTERM
// setting g_stop; restores the previous handlers after.
template <class F>
int in_cluster_system(const actors::cluster_tls& tls, F&& body) {
  caf::actor_system_config cfg;
  actors::configure_cluster(cfg);
  actors::use_cluster_tls(cfg, tls);
  caf::actor_system sys{cfg};
  auto prev_int = std::signal(SIGINT, on_cluster_signal);
  auto prev_term = std::signal(SIGTERM, on_cluster_signal);
  const int code = body(sys);
  std::signal(SIGINT, prev_int);
  std::signal(SIGTERM, prev_term);
  return code;
}

int launch_on_nodes(launch_flags f) {
  actors::cluster_launch_options o;
  o.nodes = cluster::parse_nodes(f.nodes);
  if (f.token_file.empty()) fail("launch --nodes: give the agents' token with --token FILE");
  o.token = cluster::read_token_file(f.token_file);
  o.tls = f.tls.load();
  o.nproc_per_node = f.nproc_per_node;
  o.max_restarts = f.max_restarts;
  o.min_nodes = f.min_nodes;
  if (f.args.empty()) fail("launch: give the subcommand to run, e.g. launch --nodes ... -- train");
  o.log_dir = (std::filesystem::path(run_folder(f.args)) / "logs").string();
  o.args = std::move(f.args);
  o.interrupt = &g_stop;
  const auto tls = o.tls;
  return in_cluster_system(
      tls, [&](caf::actor_system& sys) { return actors::run_cluster_launch(sys, std::move(o)); });
}

int run_node() {
  const auto at = cluster::parse_listen(g_listen);
  actors::node_agent_options o;
  o.host = at.host;
  o.port = at.port;
  o.token = cluster::read_token_file(g_node_token);
  o.tls = g_node_tls.load();
  return in_cluster_system(o.tls, [&](caf::actor_system& sys) {
    actors::node_agent agent(sys, o);
    std::cout << fmt::format("zeroflow node: listening on {}{}",
                             cluster::node_addr{at.host, agent.port()}.text(),
                             o.tls.enabled() ? " (TLS)" : "")
              << std::endl;
    while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::cerr << "zeroflow node: stopping\n";
    return 0;  // the agent stops its ranks as it goes
  });
}

void add_tls_options(CLI::App& cmd, tls_flags& t, const char* peers) {
  cmd.add_option("--tls-cert", t.cert,
                 fmt::format("TLS {}: this end's PEM certificate, signed by --tls-ca", peers));
  cmd.add_option("--tls-key", t.key, "TLS: the certificate's unencrypted PEM key (mode 600)");
  cmd.add_option("--tls-ca", t.ca, "TLS: the CA whose signature every peer's certificate needs");
}

}  // namespace

void add_cluster_subcommands(CLI::App& app) {
  auto& f = g_launch;
  g_launch_cmd = app.add_subcommand(
      "launch",
      "run a subcommand as a group of ranks: N processes on this host (--nproc), or on node "
      "agents (--nodes) with failure detection and restarts");
  auto* l = g_launch_cmd;
  l->add_option("--nproc", f.nproc, "processes on this host")->check(CLI::Range(1, 256));
  l->add_option("--master-port", f.master_port, "rendezvous port (default: a free one)");
  l->add_option("--nodes", f.nodes, "node agents HOST:PORT,HOST:PORT (see `zeroflow node`)");
  l->add_option("--token", f.token_file, "file holding the agents' token (mode 600)");
  l->add_option("--nproc-per-node", f.nproc_per_node, "ranks per node")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  l->add_option("--max-restarts", f.max_restarts,
                "restarts from the last checkpoint after a failure")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  l->add_option("--min-nodes", f.min_nodes,
                "restart on the nodes still alive if at least this many (default: all)")
      ->check(CLI::Range(0, 65536));
  add_tls_options(*l, f.tls, "to the agents");
  l->add_option("command", f.args, "after --: the subcommand and its options")->expected(-1);

  g_node_cmd = app.add_subcommand(
      "node", "a node agent: starts the ranks a `launch --nodes` asks for, reports on them");
  g_node_cmd
      ->add_option("--listen", g_listen,
                   "HOST:PORT to listen on (not loopback: reachable by others)")
      ->capture_default_str();
  g_node_cmd->add_option("--token", g_node_token, "file holding the token (mode 600)")->required();
  add_tls_options(*g_node_cmd, g_node_tls, "with launchers");
}

int run_cluster_subcommands() {
  if (g_launch_cmd && *g_launch_cmd) {
    const auto& f = g_launch;
    if (f.nodes.empty()) {
      if (!f.token_file.empty() || f.max_restarts || f.min_nodes || f.nproc_per_node != 1 ||
          f.tls.any())
        fail(
            "launch: --token, --tls-*, --nproc-per-node, --max-restarts and --min-nodes need "
            "--nodes");
      return launch_local(f.nproc, f.master_port, f.args);
    }
    return launch_on_nodes(f);
  }
  if (g_node_cmd && *g_node_cmd) return run_node();
  return -1;
}

}  // namespace zf
