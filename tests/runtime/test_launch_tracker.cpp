// The launcher's bookkeeping (runtime/cluster/launch_tracker): attempts' job ids and phases, the
// replies each phase waits for, heartbeats per node, and what follows a stopped attempt.
#include <doctest/doctest.h>

#include "runtime/cluster/launch_tracker.hpp"
#include "test_util.hpp"

using namespace zf::cluster;
using phase = launch_tracker::phase;
using namespace std::chrono_literals;
using zf::testing::contains;

namespace {
std::vector<node_addr> two_nodes() {
  return {{"127.0.0.1", 7001}, {"127.0.0.2", 7002}};
}
}  // namespace

TEST_CASE("launch tracker: an attempt starts, runs on every start reply and names the ranks") {
  launch_tracker t(two_nodes(), 2, 1, 1, "jobX");
  const auto now = launch_tracker::clock::now();
  const std::string line = t.begin_attempt({"train", "--out", "r"}, now);
  CHECK(t.job() == "jobX-a1");
  CHECK(t.current("jobX-a1"));
  CHECK_FALSE(t.current("jobX-a0"));
  CHECK(contains(line, "attempt 1: 4 rank(s) on 2 node(s): zeroflow train --out r"));
  CHECK(t.ph() == phase::starting);
  const auto a = t.started(1, {41, 42});
  CHECK(a.line == "zeroflow launch: ranks 2-3 on 127.0.0.2:7002: pids 41,42");
  REQUIRE(a.rank_headers.size() == 2);
  CHECK(a.rank_headers[1].first == 3);
  CHECK(a.rank_headers[1].second ==
        "--- zeroflow launch: attempt 1, rank 3 (pid 42) on 127.0.0.2:7002 ---");
  CHECK_FALSE(a.all_started);
  CHECK(t.ph() == phase::starting);
  CHECK(t.started(0, {11, 12}).all_started);
  CHECK(t.ph() == phase::running);
}

TEST_CASE("launch tracker: heartbeats per node, overdue only while running") {
  launch_tracker t(two_nodes(), 1, 0, 2, "j");
  const auto t0 = launch_tracker::clock::now();
  t.begin_attempt({"train"}, t0);
  CHECK(t.overdue(t0 + 10s, 5s).empty());  // still starting
  t.started(0, {1});
  t.started(1, {2});
  t.beat("j-a1", 1, t0 + 8s);
  t.beat("other-job", 0, t0 + 8s);  // another job's beat is ignored
  t.beat("j-a1", 7, t0 + 8s);       // an index outside the attempt too
  CHECK(t.overdue(t0 + 10s, 5s) == std::vector<int>{0});
  CHECK(t.overdue(t0 + 4s, 5s).empty());
  CHECK(launch_tracker::overdue_cause(5s) == "stopped answering: no heartbeat for 5 s");
}

TEST_CASE("launch tracker: a failed attempt restarts while restarts and nodes last") {
  launch_tracker t(two_nodes(), 1, 1, 1, "j");
  t.begin_attempt({"train"}, launch_tracker::clock::now());
  CHECK(t.ctrl().rank_exited(1, 3, "exited with code 3") == job_control::verdict::stop_all);
  const auto ask = t.begin_stop();
  CHECK(ask == std::vector<int>{0, 1});
  CHECK(t.ph() == phase::stopping);
  CHECK_FALSE(t.stop_replied());
  CHECK(t.stop_replied());
  auto o = t.after_stop();
  CHECK(o.restart);
  CHECK(o.line == "zeroflow launch: restart 1 of 1 on 2 node(s), from the last checkpoint");
  t.begin_attempt({"train"}, launch_tracker::clock::now());
  CHECK(t.job() == "j-a2");
  CHECK(t.ctrl().rank_exited(0, 7, "exited with code 7") == job_control::verdict::stop_all);
  t.begin_stop();
  o = t.after_stop();
  CHECK_FALSE(o.restart);
  CHECK(o.code == 7);
  CHECK(contains(o.line, "the job failed (rank 0 on 127.0.0.1:7001 exited with code 7)"));
  CHECK(contains(o.line, "1 of 1 restarts used; exit code 7"));
}

TEST_CASE("launch tracker: an interrupt or a refusal ends without restart") {
  launch_tracker t(two_nodes(), 1, 3, 1, "j");
  t.begin_attempt({"train"}, launch_tracker::clock::now());
  CHECK(t.interrupt());
  CHECK_FALSE(t.interrupt());  // once
  auto o = t.after_stop();
  CHECK_FALSE(o.restart);
  CHECK(o.code == 130);
  launch_tracker r(two_nodes(), 1, 3, 1, "k");
  r.begin_attempt({"train"}, launch_tracker::clock::now());
  r.refused();
  o = r.after_stop();
  CHECK_FALSE(o.restart);
  CHECK(o.code == 2);
}
