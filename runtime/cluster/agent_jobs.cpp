#include "runtime/cluster/agent_jobs.hpp"

#include <fmt/format.h>
#include <sys/types.h>

#include <atomic>
#include <thread>

namespace zf::cluster {

using namespace std::chrono_literals;

// One job's ranks, polled by a thread of its own (rank_processes::poll blocks) that owns the
// sink (what it holds goes when the thread ends). `done` is set by that thread and read by the
// owner's; the rest is the owner's, `ranks` also the thread's.
struct agent_jobs::runner {
  std::unique_ptr<rank_processes> ranks;
  std::thread thread;
  std::atomic<bool> done{false};
  std::vector<std::function<void()>> waiters;  // told once reaped
};

namespace {

void drive(rank_processes& ranks, std::atomic<bool>& done, const job_sink& sink) {
  auto last_beat = std::chrono::steady_clock::now() - 1s;
  while (!done) {
    auto events = ranks.poll(200ms);
    // Free before the last exit is told: a launcher that starts its next job as soon as it
    // hears of this one's end must not find the agent still busy with it.
    if (ranks.all_exited()) done = true;
    for (auto& e : events) sink.event(std::move(e));
    const auto now = std::chrono::steady_clock::now();
    if (now - last_beat >= 1s) {
      sink.beat();
      last_beat = now;
    }
  }
  sink.ended();
}

// e.g. "job j-a1: started ranks 2-3 of 4 (pids 11,12): zeroflow train --steps 3"
std::string started_text(const node_share& share, const std::vector<int>& pids) {
  return fmt::format("job {}: started ranks {}-{} of {} (pids {}): zeroflow {}", share.job,
                     share.node * share.nproc_per_node, (share.node + 1) * share.nproc_per_node - 1,
                     share.world, fmt::join(pids, ","), fmt::join(share.args, " "));
}

}  // namespace

agent_jobs::agent_jobs(std::function<void(const std::string&)> log) : log_(std::move(log)) {}

agent_jobs::~agent_jobs() {
  for (auto& [id, r] : jobs_) r->ranks->request_stop(0ms);
  for (auto& [id, r] : jobs_)
    if (r->thread.joinable()) r->thread.join();
}

agent_jobs::start_result agent_jobs::start(const node_share& share, const std::string& executable,
                                           job_sink sink, const std::string& peer) {
  start_result out;
  const std::string busy = busy_with();
  // A runner replaced while its thread may still run would end the process (joinable thread).
  if (!busy.empty() || jobs_.contains(share.job)) {
    out.what = start_result::kind::busy;
    out.why = fmt::format("this agent is busy with job {}", busy.empty() ? share.job : busy);
    return out;
  }
  std::vector<rank_launch> launches;
  try {
    launches = launches_for(share);
  } catch (const std::exception& e) {
    out.what = start_result::kind::refused;
    out.why = e.what();
    log_(fmt::format("refused job {} from {}: {}", share.job, peer, out.why));
    return out;
  }
  auto r = std::make_unique<runner>();
  try {
    r->ranks = std::make_unique<rank_processes>(executable, std::move(launches));
  } catch (const std::exception& e) {
    out.what = start_result::kind::failed;
    out.why = e.what();
    log_(fmt::format("job {}: cannot start its ranks: {}", share.job, out.why));
    return out;
  }
  for (pid_t p : r->ranks->pids()) out.pids.push_back(static_cast<int>(p));  // before polling
  runner& rr = *r;  // the map moves the pointer, never the runner
  rr.thread = std::thread([&rr, sink = std::move(sink)] { drive(*rr.ranks, rr.done, sink); });
  jobs_[share.job] = std::move(r);
  log_(started_text(share, out.pids));
  return out;
}

bool agent_jobs::running(const std::string& job) const {
  auto it = jobs_.find(job);
  return it != jobs_.end() && !it->second->done;
}

std::string agent_jobs::busy_with() const {
  std::string id;
  for (auto& [job, r] : jobs_)
    if (!r->done) id = job;
  return id;
}

bool agent_jobs::stop(const std::string& job, std::chrono::milliseconds grace,
                      const std::string& why) {
  if (!running(job)) return false;
  log_(fmt::format("job {}: {}", job, why));
  jobs_.at(job)->ranks->request_stop(grace);
  return true;
}

void agent_jobs::when_ended(const std::string& job, std::function<void()> waiter) {
  if (auto it = jobs_.find(job); it != jobs_.end())
    it->second->waiters.push_back(std::move(waiter));
}

int agent_jobs::reap(const std::function<void(const std::string&)>& on_reaped) {
  int reaped = 0;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    auto& r = *it->second;
    if (!r.done) {
      ++it;
      continue;
    }
    if (r.thread.joinable()) r.thread.join();
    log_(fmt::format("job {}: every rank has ended", it->first));
    on_reaped(it->first);
    for (auto& w : r.waiters) w();
    it = jobs_.erase(it);
    ++reaped;
  }
  return reaped;
}

std::string listen_warning(const std::string& host, bool tls) {
  const bool loopback = host.starts_with("127.") || host == "::1" || host == "localhost";
  if (tls || loopback) return "";
  return fmt::format(
      "warning: listening on {} without TLS: the token and every job's arguments travel in "
      "clear text (give --tls-cert, --tls-key and --tls-ca)",
      host);
}

}  // namespace zf::cluster
