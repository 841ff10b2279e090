#pragma once
// `zeroflow launch --nodes h1:p1,h2:p2 ...`: drives node agents (actors/node_agent) through one
// job. It connects to every agent with the token, starts an attempt (nproc_per_node ranks per
// live node, the rendezvous on the first node's free port), prints every rank's output prefixed
// `[rank N]` and appends it to log_dir/rank-N.log, and watches: a rank that fails, an agent
// whose connection drops and an agent that misses its heartbeats are each named with the host
// and the cause, every other rank is stopped, and with restarts left (and min_nodes alive) the
// job starts again from the last checkpoint (`--resume auto`). The decisions are
// runtime/cluster/job_control's; this actor carries the messages.
#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "actors/cluster_tls.hpp"
#include "runtime/cluster/job_spec.hpp"

namespace zf::actors {

struct cluster_launch_options {
  std::vector<cluster::node_addr> nodes;
  std::string token;
  cluster_tls tls;  // TLS to every agent (sys set up by use_cluster_tls); none = plain TCP
  int nproc_per_node = 1;
  int max_restarts = 0;
  int min_nodes = 0;              // 0 = every node
  std::vector<std::string> args;  // zeroflow's argv[1..] for every rank (`train ... --out D`)
  std::string log_dir;            // rank-N.log files ("" = none)
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds heartbeat_timeout = std::chrono::seconds(5);
  std::chrono::milliseconds stop_grace = std::chrono::seconds(5);
  std::function<void(const std::string&)> print;  // ranks' output lines (default: stdout)
  std::function<void(const std::string&)> say;    // the launcher's own lines (default: stderr)
  const std::atomic<bool>* interrupt = nullptr;   // set (Ctrl-C): stop every rank, exit 130
};

// Blocks until the job ends; returns the launcher's exit code: 0 when every rank of an attempt
// finished, else the failing rank's code (128 + signal when killed), 1 for a lost node, 2 for a
// request the agents refused, 130 when interrupted. zf::error when an agent cannot be reached or
// refuses the token at the start. `sys` needs configure_cluster's set-up.
int run_cluster_launch(caf::actor_system& sys, cluster_launch_options o);

}  // namespace zf::actors
