#pragma once
// The launcher's decisions for one multi-node job, as a plain state machine (the actor in
// actors/cluster_launcher only carries messages): which nodes an attempt runs on, what a rank's
// exit or a lost node means, and whether to restart.
//
// An attempt runs nproc_per_node ranks on every node still alive, node-major (plan_ranks). The
// first failure of an attempt (a rank that exits non-zero or is killed, or a node that stops
// answering) stops every rank; then, with restarts left and at least min_nodes alive, the next
// attempt starts from the last checkpoint, else the job ends with the failure's exit code.
#include <string>
#include <vector>

#include "runtime/cluster/job_spec.hpp"

namespace zf::cluster {

class job_control {
 public:
  // zf::error when nodes is empty, nproc_per_node < 1, max_restarts < 0 or min_nodes outside
  // 1..nodes.size().
  job_control(std::vector<node_addr> nodes, int nproc_per_node, int max_restarts, int min_nodes);

  struct attempt {
    int number = 0;          // 1, 2, ...
    std::vector<int> nodes;  // indices into the node list, in rank order
    int world = 0;
  };
  bool can_start() const;  // at least min_nodes alive and restarts not spent
  // The next attempt over the nodes alive now. zf::error when !can_start().
  const attempt& begin_attempt();
  const attempt& current() const { return attempt_; }

  enum class verdict { carry_on, stop_all, succeeded };
  // A rank of the current attempt ended: code 0 = finished; anything else (128 + signal for a
  // signal) is a failure. `how` is describe_exit's text.
  verdict rank_exited(int rank, int code, const std::string& how);
  // A node stopped answering or its connection was lost.
  verdict node_lost(int node, const std::string& cause);

  // The i-th node's share of the current attempt (job id, the attempt's arguments via
  // attempt_args, rank 0 on its first node).
  node_share share(std::size_t i, const std::string& job, const std::vector<std::string>& args,
                   int master_port, const std::string& job_secret) const;

  // After every rank of a failed attempt is stopped: whether to start another.
  bool should_restart() const;

  bool failed() const { return !failure_.empty(); }
  const std::string& failure() const { return failure_; }  // the attempt's first failure
  int exit_code() const { return exit_code_; }
  int restarts_used() const { return attempt_.number > 0 ? attempt_.number - 1 : 0; }
  int max_restarts() const { return max_restarts_; }
  bool alive(int node) const { return alive_.at(static_cast<std::size_t>(node)); }
  int alive_count() const;
  const node_addr& node(int i) const { return nodes_.at(static_cast<std::size_t>(i)); }
  int node_count() const { return static_cast<int>(nodes_.size()); }
  int nproc_per_node() const { return nproc_; }
  // The node index (into the node list) running `rank` in the current attempt.
  int node_of_rank(int rank) const;
  // "ranks 2-3" / "rank 2" of a node in the current attempt ("" when it has none).
  std::string ranks_of(int node) const;

 private:
  verdict fail_with(std::string what, int code);
  std::vector<node_addr> nodes_;
  std::vector<bool> alive_;
  int nproc_, max_restarts_, min_nodes_;
  attempt attempt_;
  int finished_ = 0;  // ranks of this attempt that exited 0
  bool stopping_ = false, succeeded_ = false;
  std::string failure_;
  int exit_code_ = 0;
};

}  // namespace zf::cluster
