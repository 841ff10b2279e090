#pragma once
// The ranks a node agent runs for one job: each a child process of this binary in its own
// process group (setsid), stdout and stderr on one pipe, dying with the agent
// (PR_SET_PDEATHSIG). One thread drives it with poll(): that collects output lines and exits, and
// carries out a requested stop (SIGTERM to every live rank's process group, SIGKILL to the groups
// after the grace period), so a stop leaves nothing running, grandchildren included.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/cluster/job_spec.hpp"

namespace zf::cluster {

struct rank_launch {
  int rank = 0;                                          // global rank: what events name
  std::vector<std::string> args;                         // argv[1..] of the executable
  std::vector<std::pair<std::string, std::string>> env;  // set on top of this process's
};

struct rank_event {
  enum class kind { output, exited };
  kind what = kind::output;
  int rank = 0;
  // output: one or more whole lines, each ending in '\n' (a final line without one is completed
  // when the rank exits), at most about 64 KiB per event (a longer line arrives cut into 64 KiB
  // pieces, each completed with '\n'); exited: describe_exit's text.
  std::string text;
  int exit_code = 0;  // exited: the exit code, or 128 + signal number (-1: reaped elsewhere)
};

// The ranks an agent starts for its share: check_launch_args on the arguments, the share's
// ranks fitting its world (zf::error otherwise), each with rank_env's variables and ZF_ATTEMPT.
std::vector<rank_launch> launches_for(const node_share& share);

class rank_processes {
 public:
  // Starts every rank now; "" = this executable (self_executable()). zf::error when a fork or
  // pipe fails (ranks already started are killed first). PR_SET_PDEATHSIG fires when the *thread*
  // that forked a rank ends: construct this on a thread that lives as long as the ranks should.
  // A rank's stdin is /dev/null; its signal handlers and mask start at the defaults.
  rank_processes(const std::string& executable, std::vector<rank_launch> ranks);
  // SIGKILLs every rank's process group (a reaped leader's too: its grandchildren) and reaps.
  ~rank_processes();
  rank_processes(const rank_processes&) = delete;
  rank_processes& operator=(const rank_processes&) = delete;

  // Waits up to `timeout` for output or exits (poll(2) on the pipes, waitpid), returns what
  // happened in order, possibly nothing. Output of a rank always comes before its exited event.
  // Also escalates a requested stop. One thread only.
  std::vector<rank_event> poll(std::chrono::milliseconds timeout);

  // Any thread: SIGTERM now (done by the next poll), SIGKILL after `grace`.
  void request_stop(std::chrono::milliseconds grace);

  // poll's thread (or before polling starts): poll updates what these read.
  bool all_exited() const;          // every rank reaped and its output delivered
  std::vector<pid_t> pids() const;  // -1 for a reaped rank

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace zf::cluster
