// agent_jobs (runtime/cluster): a node agent's jobs without the actor, on real child processes
// (a shell script standing in for the zeroflow binary). A job's lines and exits reach its sink
// in order with the share's variables, it is reaped (and logged) once every rank has ended; one
// job at a time; a share that fails launches_for is refused untried; a stop ends the ranks and
// its waiters hear after the "every rank has ended" line; destroying the table leaves no rank.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cluster/agent_jobs.hpp"
#include "test_util.hpp"

namespace {

using namespace std::chrono_literals;
using zf::cluster::agent_jobs;
using zf::cluster::job_sink;
using zf::cluster::node_share;
using zf::cluster::rank_event;
using kind = agent_jobs::start_result::kind;
using zf::testing::contains;

// What a job's thread hands on, and the agent's log lines.
struct recorder {
  std::mutex m;
  std::vector<rank_event> events;
  int beats = 0;
  std::atomic<bool> ended{false};
  std::vector<std::string> log;

  job_sink sink() {
    return {[this](rank_event e) {
              std::lock_guard lock(m);
              events.push_back(std::move(e));
            },
            [this] {
              std::lock_guard lock(m);
              ++beats;
            },
            [this] { ended = true; }};
  }
  std::function<void(const std::string&)> logger() {
    return [this](const std::string& line) { log.push_back(line); };
  }
  void wait_ended(std::chrono::milliseconds limit = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!ended && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(10ms);
    REQUIRE(ended);
  }
};

// Stands in for zeroflow: says who it is, then `train --wait` sleeps, anything else exits with
// RANK + 2.
std::string write_fake_zeroflow(const zf::testing::temp_dir& dir) {
  const auto path = (dir / "fake_zeroflow").string();
  std::ofstream(path) << "#!/bin/sh\n"
                         "echo \"rank $RANK of $WORLD_SIZE attempt $ZF_ATTEMPT: $*\"\n"
                         "[ \"$2\" = --wait ] && exec sleep 30\n"
                         "exit $((RANK + 2))\n";
  ::chmod(path.c_str(), 0755);
  return path;
}

// Node 1 of 2 with 2 ranks each: ranks 2 and 3 of 4.
node_share share_of(const std::string& job, std::vector<std::string> args) {
  node_share s;
  s.job = job;
  s.args = std::move(args);
  s.node = 1;
  s.world = 4;
  s.nproc_per_node = 2;
  s.master_host = "127.0.0.1";
  s.master_port = 1234;
  s.job_secret = "secret";
  s.node_host = "127.0.0.1";
  return s;
}

bool gone(int pid) {
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

TEST_CASE("agent jobs: lines then exits reach the sink, and the ended job is reaped") {
  zf::testing::temp_dir dir("agent_jobs");
  const auto exe = write_fake_zeroflow(dir);
  recorder rec;
  agent_jobs jobs(rec.logger());
  auto r = jobs.start(share_of("j-a1", {"train", "--steps", "3"}), exe, rec.sink(), "tester");
  REQUIRE(r.what == kind::started);
  REQUIRE(r.pids.size() == 2);
  REQUIRE(rec.log.size() == 1);
  CHECK(rec.log[0] == fmt::format("job j-a1: started ranks 2-3 of 4 (pids {},{}): zeroflow train "
                                  "--steps 3",
                                  r.pids[0], r.pids[1]));
  rec.wait_ended();
  CHECK(!jobs.running("j-a1"));
  CHECK(jobs.busy_with().empty());
  {
    std::lock_guard lock(rec.m);
    CHECK(rec.beats >= 1);  // the first beat follows the first poll
    for (int rank : {2, 3}) {
      std::string out;
      int exits = 0;
      for (auto& e : rec.events) {
        if (e.rank != rank) continue;
        if (e.what == rank_event::kind::output) {
          CHECK(exits == 0);  // output before the exit
          out += e.text;
        } else {
          ++exits;
          CHECK(e.exit_code == rank + 2);
        }
      }
      CHECK(exits == 1);
      CHECK(out == fmt::format("rank {} of 4 attempt 1: train --steps 3\n", rank));
    }
  }
  std::vector<std::string> reaped;
  CHECK(jobs.reap([&](const std::string& job) { reaped.push_back(job); }) == 1);
  CHECK(reaped == std::vector<std::string>{"j-a1"});
  CHECK(rec.log.back() == "job j-a1: every rank has ended");
  CHECK(jobs.reap([&](const std::string& job) { reaped.push_back(job); }) == 0);
  // reaped, the id may be used again
  recorder again;
  CHECK(jobs.start(share_of("j-a1", {"train"}), exe, again.sink(), "tester").what == kind::started);
  again.wait_ended();
  CHECK(jobs.reap([](const std::string&) {}) == 1);
}

TEST_CASE("agent jobs: one job at a time, and a stop ends it with its waiters told after the log") {
  zf::testing::temp_dir dir("agent_jobs");
  const auto exe = write_fake_zeroflow(dir);
  recorder rec, other;
  agent_jobs jobs(rec.logger());
  auto r = jobs.start(share_of("j-a1", {"train", "--wait"}), exe, rec.sink(), "tester");
  REQUIRE(r.what == kind::started);
  CHECK(jobs.running("j-a1"));
  CHECK(jobs.busy_with() == "j-a1");

  auto busy = jobs.start(share_of("j-b1", {"train"}), exe, other.sink(), "tester");
  CHECK(busy.what == kind::busy);
  CHECK(busy.why == "this agent is busy with job j-a1");
  CHECK(busy.pids.empty());
  CHECK(!jobs.running("j-b1"));
  CHECK(rec.log.size() == 1);  // a busy agent refuses without a line

  CHECK(!jobs.stop("j-zz", 0ms, "stopping its ranks"));  // unknown: nothing asked, nothing said
  CHECK(rec.log.size() == 1);
  CHECK(jobs.stop("j-a1", 100ms, "stopping its ranks (asked by the test)"));
  CHECK(rec.log.back() == "job j-a1: stopping its ranks (asked by the test)");
  jobs.when_ended("j-a1", [&] { rec.log.push_back("waiter told"); });
  rec.wait_ended();
  CHECK(!jobs.stop("j-a1", 0ms, "again"));  // ended: nothing more to ask
  CHECK(jobs.reap([](const std::string&) {}) == 1);
  REQUIRE(rec.log.size() >= 2);
  CHECK(rec.log[rec.log.size() - 2] == "job j-a1: every rank has ended");
  CHECK(rec.log.back() == "waiter told");
  std::lock_guard lock(rec.m);
  int exits = 0;
  for (auto& e : rec.events)
    if (e.what == rank_event::kind::exited) {
      ++exits;
      CHECK(e.exit_code == 128 + SIGTERM);  // sleep ends on the SIGTERM
    }
  CHECK(exits == 2);
  for (int pid : r.pids) CHECK(gone(pid));
}

TEST_CASE("agent jobs: a share that fails the launch check is refused untried") {
  zf::testing::temp_dir dir("agent_jobs");
  const auto exe = write_fake_zeroflow(dir);
  recorder rec;
  agent_jobs jobs(rec.logger());
  auto r = jobs.start(share_of("j-x", {"train", "a;b"}), exe, rec.sink(), "10.1.2.3");
  CHECK(r.what == kind::refused);
  CHECK(r.pids.empty());
  CHECK(contains(r.why, "a;b"));
  REQUIRE(rec.log.size() == 1);
  CHECK(rec.log[0] == "refused job j-x from 10.1.2.3: " + r.why);
  CHECK(jobs.busy_with().empty());
  CHECK(jobs.reap([](const std::string&) {}) == 0);
  auto misfit = share_of("j-y", {"train"});
  misfit.world = 3;  // node 1's ranks 2-3 do not fit
  CHECK(jobs.start(misfit, exe, rec.sink(), "tester").what == kind::refused);
  CHECK(!rec.ended);  // no thread ever ran
}

TEST_CASE("agent jobs: destroying the table stops every rank and ends its thread") {
  zf::testing::temp_dir dir("agent_jobs");
  const auto exe = write_fake_zeroflow(dir);
  recorder rec;
  std::vector<int> pids;
  {
    agent_jobs jobs(rec.logger());
    auto r = jobs.start(share_of("j-a1", {"train", "--wait"}), exe, rec.sink(), "tester");
    REQUIRE(r.what == kind::started);
    pids = r.pids;
    for (int pid : pids) CHECK(!gone(pid));
  }
  CHECK(rec.ended);
  for (int pid : pids) CHECK(gone(pid));
}

TEST_CASE("agent jobs: listening in clear text off loopback warns") {
  using zf::cluster::listen_warning;
  for (const char* host : {"127.0.0.1", "127.3.4.5", "::1", "localhost"})
    CHECK(listen_warning(host, false).empty());
  CHECK(listen_warning("0.0.0.0", true).empty());
  CHECK(listen_warning("10.0.0.7", true).empty());
  for (const char* host : {"0.0.0.0", "10.0.0.7", "::"})
    CHECK(listen_warning(host, false) ==
          fmt::format("warning: listening on {} without TLS: the token and every job's arguments "
                      "travel in clear text (give --tls-cert, --tls-key and --tls-ca)",
                      host));
}
