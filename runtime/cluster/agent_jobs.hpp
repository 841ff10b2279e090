#pragma once
// The jobs a node agent runs, as a plain class (the actor in actors/node_agent only carries
// messages): one job at a time, its ranks (rank_processes, from launches_for) driven by a thread
// of their own, which hands every output line and exit to the job's sink in order and beats once
// a second; a stop asked for, with whoever waits on it; the ended jobs reaped (thread joined,
// waiters told) on the owner's thread; and the agent's log lines for each of those. Destroying it
// stops every rank at once and joins every thread: nothing it started outlives it.
//
// Threads: every member function on one thread (the agent's); the sink's functions are called
// from the job's own thread.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/cluster/job_spec.hpp"
#include "runtime/cluster/rank_processes.hpp"

namespace zf::cluster {

// Where a job's thread sends what happens: `event` for each output or exit (in rank_processes'
// order), `beat` about once a second while the ranks run (the first after the first 200 ms poll),
// and `ended` once after the last event, as the thread finishes (reap may then collect the job).
// The job stops counting as running just before its last exit goes to `event`: whoever starts
// the next job on hearing of this one's end must not find it still busy. The thread owns the
// sink: what its functions hold is released when the thread ends.
struct job_sink {
  std::function<void(rank_event)> event;
  std::function<void()> beat;
  std::function<void()> ended;
};

class agent_jobs {
 public:
  // `log` takes the agent's log lines (one line each, no '\n'), on the owner's thread.
  explicit agent_jobs(std::function<void(const std::string&)> log);
  ~agent_jobs();  // SIGKILLs every job's ranks (grace 0) and joins every thread
  agent_jobs(const agent_jobs&) = delete;
  agent_jobs& operator=(const agent_jobs&) = delete;

  // What start did. started: pids (launch order); otherwise nothing runs and `why` says why:
  // busy (a job still runs, or one of that id is not yet reaped), refused (launches_for's check
  // of the share failed: nothing was tried), failed (a rank could not be started).
  struct start_result {
    enum class kind { started, busy, refused, failed } what = kind::started;
    std::vector<int> pids;
    std::string why;
  };
  // Starts the share's ranks running `executable` ("" = this binary) and their thread. The
  // ranks die with the thread that forks them (PR_SET_PDEATHSIG): call this from a thread that
  // lives as long as they should. Every function of `sink` must be set. Logs the start, a
  // refusal (naming `peer`, who asked) or a failure; a busy agent refuses without a line.
  start_result start(const node_share& share, const std::string& executable, job_sink sink,
                     const std::string& peer);

  // Whether `job` is here and its ranks have not all ended.
  bool running(const std::string& job) const;
  // The id of the job that still runs, "" when none.
  std::string busy_with() const;

  // Asks `job`'s ranks to stop: SIGTERM now, SIGKILL after `grace`, logging "job <id>: <why>"
  // first. False (nothing asked or logged) when the job is not running.
  bool stop(const std::string& job, std::chrono::milliseconds grace, const std::string& why);
  // Runs `waiter` when reap collects `job` (after reap's on_reaped for it). Unknown job: ignored.
  void when_ended(const std::string& job, std::function<void()> waiter);

  // Collects every ended job, in id order: joins its thread, logs that every rank has ended,
  // calls on_reaped(id), then its waiters (whoever asked for the stop reads the log line before
  // the stop is confirmed), and forgets it. Returns how many it collected.
  int reap(const std::function<void(const std::string& job)>& on_reaped);

 private:
  struct runner;
  std::function<void(const std::string&)> log_;
  std::map<std::string, std::unique_ptr<runner>> jobs_;
};

// The warning an agent listening on `host` gives, "" for none: without TLS on an address other
// than loopback (127.0.0.0/8, ::1, localhost) the token and every job's arguments travel in
// clear text.
std::string listen_warning(const std::string& host, bool tls);

}  // namespace zf::cluster
