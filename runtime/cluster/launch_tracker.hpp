#pragma once
// The launcher's bookkeeping around job_control, as a plain class (actors/cluster_launcher only
// carries messages): which phase an attempt is in (its agents starting the ranks, the ranks
// running, every rank being stopped, the job done), how many agents' replies the phase still
// waits for, each node's last heartbeat, and what happens once every rank of a failed attempt
// has stopped (restart, or the exit code and the line that says why). Replies and messages of
// an earlier attempt are told apart by the job id (`current`).
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "runtime/cluster/job_control.hpp"

namespace zf::cluster {

class launch_tracker {
 public:
  using clock = std::chrono::steady_clock;
  enum class phase { starting, running, stopping, done };

  // run_name: the job ids' prefix (attempt N is "<run_name>-aN"). job_control's refusals.
  launch_tracker(std::vector<node_addr> nodes, int nproc_per_node, int max_restarts, int min_nodes,
                 std::string run_name);

  job_control& ctrl() { return ctrl_; }
  const job_control& ctrl() const { return ctrl_; }
  phase ph() const { return ph_; }
  const std::string& job() const { return job_; }
  bool current(const std::string& job) const { return job == job_; }

  // The next attempt (job_control::begin_attempt): phase starting, every node's heartbeat reset
  // to now, one start reply expected per node. Returns the line that announces it.
  std::string begin_attempt(const std::vector<std::string>& args, clock::time_point now);
  // A node's agent started its ranks (pids, in rank order): the launcher's line naming them,
  // each rank's log header, and whether every node's has now (the phase becomes running).
  struct start_note {
    std::string line;
    std::vector<std::pair<int, std::string>> rank_headers;  // (rank, header line)
    bool all_started = false;
  };
  start_note started(int node, const std::vector<int>& pids);

  // Every rank is to stop: phase stopping; returns the live nodes to ask (one reply each).
  std::vector<int> begin_stop();
  // One stop reply (or a node that could not confirm): whether it was the last awaited.
  bool stop_replied() { return --pending_ == 0; }
  bool nothing_pending() const { return pending_ == 0; }

  void refused() { refused_ = true; }
  // Ctrl-C: true the first time (the caller stops every rank unless already stopping).
  bool interrupt();

  // Once every rank of the attempt stopped: restart (line says which), or end with code (line
  // says why; empty when interrupted (130) or refused (2), said when that happened).
  struct outcome {
    bool restart = false;
    int code = 0;
    std::string line;
  };
  outcome after_stop() const;

  // Heartbeat of node_in_job (the index into the current attempt's nodes) for job; ignored for
  // another job or an index out of range.
  void beat(const std::string& job, int node_in_job, clock::time_point now);
  // Live nodes of a running attempt whose last heartbeat is older than timeout.
  std::vector<int> overdue(clock::time_point now, std::chrono::milliseconds timeout) const;
  // The cause a node_lost gets for an overdue node.
  static std::string overdue_cause(std::chrono::milliseconds timeout);

  void finish() { ph_ = phase::done; }

 private:
  job_control ctrl_;
  std::string run_name_, job_;
  phase ph_ = phase::starting;
  std::vector<clock::time_point> last_beat_;
  int pending_ = 0;
  bool refused_ = false, interrupted_ = false;
};

}  // namespace zf::cluster
