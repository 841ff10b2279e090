#include "runtime/cluster/job_control.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "runtime/core/error.hpp"

namespace zf::cluster {

job_control::job_control(std::vector<node_addr> nodes, int nproc_per_node, int max_restarts,
                         int min_nodes)
    : nodes_(std::move(nodes)),
      alive_(nodes_.size(), true),
      nproc_(nproc_per_node),
      max_restarts_(max_restarts),
      min_nodes_(min_nodes) {
  if (nodes_.empty()) fail("launch --nodes: give at least one agent");
  if (nproc_ < 1) fail("launch --nproc-per-node: expected at least 1, got {}", nproc_);
  if (max_restarts_ < 0) fail("launch --max-restarts: expected 0 or more, got {}", max_restarts_);
  if (min_nodes_ < 1 || min_nodes_ > node_count())
    fail("launch --min-nodes: expected 1..{} (the number of --nodes), got {}", node_count(),
         min_nodes_);
}

int job_control::alive_count() const {
  return static_cast<int>(std::count(alive_.begin(), alive_.end(), true));
}

bool job_control::can_start() const {
  return alive_count() >= min_nodes_ && (attempt_.number == 0 || restarts_used() < max_restarts_);
}

bool job_control::should_restart() const {
  return failed() && !succeeded_ && can_start();
}

const job_control::attempt& job_control::begin_attempt() {
  if (!can_start())
    fail(
        "launch: cannot start attempt {}: {} of {} nodes alive (--min-nodes {}), {} of {} "
        "restarts used",
        attempt_.number + 1, alive_count(), node_count(), min_nodes_, restarts_used(),
        max_restarts_);
  attempt next;
  next.number = attempt_.number + 1;
  for (int i = 0; i < node_count(); ++i)
    if (alive(i)) next.nodes.push_back(i);
  next.world = static_cast<int>(next.nodes.size()) * nproc_;
  attempt_ = std::move(next);
  finished_ = 0;
  stopping_ = false;
  failure_.clear();
  exit_code_ = 0;
  return attempt_;
}

int job_control::node_of_rank(int rank) const {
  if (rank < 0 || rank >= attempt_.world) return -1;
  return attempt_.nodes[static_cast<std::size_t>(rank / nproc_)];
}

std::string job_control::ranks_of(int node) const {
  for (std::size_t i = 0; i < attempt_.nodes.size(); ++i)
    if (attempt_.nodes[i] == node) {
      const int first = static_cast<int>(i) * nproc_;
      return nproc_ == 1 ? fmt::format("rank {}", first)
                         : fmt::format("ranks {}-{}", first, first + nproc_ - 1);
    }
  return "";
}

job_control::verdict job_control::fail_with(std::string what, int code) {
  if (stopping_ || succeeded_) return verdict::carry_on;  // the first failure is the one named
  stopping_ = true;
  failure_ = std::move(what);
  exit_code_ = code;
  return verdict::stop_all;
}

job_control::verdict job_control::rank_exited(int rank, int code, const std::string& how) {
  const int node = node_of_rank(rank);
  if (node < 0) return verdict::carry_on;  // not a rank of this attempt
  if (code == 0) {
    if (stopping_ || succeeded_) return verdict::carry_on;
    if (++finished_ == attempt_.world) {
      succeeded_ = true;
      return verdict::succeeded;
    }
    return verdict::carry_on;
  }
  return fail_with(
      fmt::format("rank {} on {} {}", rank, nodes_[static_cast<std::size_t>(node)].text(), how),
      code);
}

job_control::verdict job_control::node_lost(int node, const std::string& cause) {
  if (node < 0 || node >= node_count() || !alive(node)) return verdict::carry_on;
  alive_[static_cast<std::size_t>(node)] = false;
  const std::string ranks = ranks_of(node);
  if (ranks.empty()) return verdict::carry_on;  // not part of the running attempt
  return fail_with(
      fmt::format("node {} ({}) {}", nodes_[static_cast<std::size_t>(node)].text(), ranks, cause),
      1);
}

node_share job_control::share(std::size_t i, const std::string& job,
                              const std::vector<std::string>& args, int master_port,
                              const std::string& job_secret) const {
  node_share s;
  s.job = job;
  s.attempt = attempt_.number;
  s.args = attempt_args(args, attempt_.number);
  s.node = static_cast<int>(i);
  s.world = attempt_.world;
  s.nproc_per_node = nproc_;
  s.master_host = node(attempt_.nodes.front()).host;
  s.master_port = master_port;
  s.job_secret = job_secret;
  s.node_host = node(attempt_.nodes.at(i)).host;
  return s;
}

}  // namespace zf::cluster
