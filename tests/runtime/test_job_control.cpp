// The launcher's decisions (runtime/cluster/job_control): attempts over the live nodes, what a
// rank's exit or a lost node means, the first failure named, restarts within the limits. And
// the fault hook the cluster tests use (ZF_FAULT_EXIT).
#include <doctest/doctest.h>

#include <fstream>

#include "runtime/cluster/job_control.hpp"
#include "runtime/cluster/rank_logs.hpp"
#include "test_util.hpp"

using namespace zf::cluster;
using verdict = job_control::verdict;
using zf::testing::contains;
using zf::testing::error_of;

namespace {
std::string file_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
std::vector<node_addr> three_nodes() {
  return {{"127.0.0.1", 7001}, {"127.0.0.2", 7002}, {"127.0.0.3", 7003}};
}
}  // namespace

TEST_CASE("job control: every rank finishing succeeds, node-major ranks") {
  job_control c(three_nodes(), 2, 0, 3);
  const auto& a = c.begin_attempt();
  CHECK(a.number == 1);
  CHECK(a.world == 6);
  CHECK(a.nodes == std::vector<int>{0, 1, 2});
  CHECK(c.node_of_rank(0) == 0);
  CHECK(c.node_of_rank(3) == 1);
  CHECK(c.node_of_rank(5) == 2);
  CHECK(c.node_of_rank(6) == -1);
  CHECK(c.ranks_of(1) == "ranks 2-3");
  for (int r = 0; r < 5; ++r) CHECK(c.rank_exited(r, 0, "exited with code 0") == verdict::carry_on);
  CHECK(c.rank_exited(5, 0, "exited with code 0") == verdict::succeeded);
  CHECK(!c.failed());
  CHECK(!c.should_restart());
}

TEST_CASE("job control: the first failure is named, later ones only stop") {
  job_control c(three_nodes(), 2, 1, 3);
  c.begin_attempt();
  CHECK(c.rank_exited(0, 0, "exited with code 0") == verdict::carry_on);
  CHECK(c.rank_exited(3, 3, "exited with code 3") == verdict::stop_all);
  CHECK(c.failure() == "rank 3 on 127.0.0.2:7002 exited with code 3");
  CHECK(c.exit_code() == 3);
  // the ranks stopped after it, and a node lost meanwhile, do not replace the first failure
  CHECK(c.rank_exited(1, 143, "was killed by signal Terminated") == verdict::carry_on);
  CHECK(c.node_lost(2, "stopped answering") == verdict::carry_on);
  CHECK(c.failure() == "rank 3 on 127.0.0.2:7002 exited with code 3");
  CHECK(!c.alive(2));
  // min_nodes 3 with one lost: no restart although one is left
  CHECK(!c.should_restart());
}

TEST_CASE("job control: a lost node restarts on the rest while min_nodes remain") {
  job_control c(three_nodes(), 2, 2, 1);
  c.begin_attempt();
  CHECK(c.node_lost(1, "stopped answering: no heartbeat for 5 s") == verdict::stop_all);
  CHECK(c.failure() == "node 127.0.0.2:7002 (ranks 2-3) stopped answering: no heartbeat for 5 s");
  CHECK(c.exit_code() == 1);
  REQUIRE(c.should_restart());
  const auto& a = c.begin_attempt();
  CHECK(a.number == 2);
  CHECK(a.nodes == std::vector<int>{0, 2});
  CHECK(a.world == 4);
  CHECK(c.node_of_rank(2) == 2);  // node 2 now holds ranks 2-3
  CHECK(!c.failed());
  CHECK(c.restarts_used() == 1);
  // a second failure uses the last restart; a third has none left
  CHECK(c.rank_exited(0, 137, "was killed by signal Killed") == verdict::stop_all);
  REQUIRE(c.should_restart());
  c.begin_attempt();
  CHECK(c.rank_exited(1, 1, "exited with code 1") == verdict::stop_all);
  CHECK(!c.should_restart());
  CHECK(contains(error_of([&] { c.begin_attempt(); }), "2 of 2 restarts used"));
}

TEST_CASE("job control: a node lost outside the attempt or twice changes nothing") {
  job_control c(three_nodes(), 1, 1, 1);
  c.begin_attempt();
  CHECK(c.node_lost(0, "x") == verdict::stop_all);
  CHECK(c.node_lost(0, "x") == verdict::carry_on);
  c.begin_attempt();  // nodes 1 and 2
  CHECK(c.current().nodes == std::vector<int>{1, 2});
  CHECK(c.node_lost(0, "x") == verdict::carry_on);       // not in the attempt, already lost
  CHECK(c.rank_exited(7, 1, "x") == verdict::carry_on);  // no such rank
}

TEST_CASE("job control: bad limits are refused by name") {
  CHECK(contains(error_of([] { job_control({}, 1, 0, 1); }), "--nodes"));
  CHECK(contains(error_of([] { job_control(three_nodes(), 0, 0, 1); }), "--nproc-per-node"));
  CHECK(contains(error_of([] { job_control(three_nodes(), 1, -1, 1); }), "--max-restarts"));
  CHECK(contains(error_of([] { job_control(three_nodes(), 1, 0, 4); }), "--min-nodes"));
}

TEST_CASE("job control: the fault hook aims at one rank on the first attempt") {
  auto f = injected_fault_for(1, "1:12:kill", nullptr);
  REQUIRE(f);
  CHECK(f->step == 12);
  CHECK(f->code == -1);
  f = injected_fault_for(3, "3:8:3", "1");
  REQUIRE(f);
  CHECK(f->code == 3);
  CHECK(!injected_fault_for(0, "3:8:3", nullptr));  // another rank
  CHECK(!injected_fault_for(3, "3:8:3", "2"));      // a restarted job runs clean
  CHECK(!injected_fault_for(3, "", nullptr));
  CHECK(!injected_fault_for(3, nullptr, nullptr));
  for (const char* bad : {"3:8", "x:8:3", "3:0:3", "3:8:300", "3:8:boom", "3:8:3:4"})
    CHECK(contains(error_of([&] { injected_fault_for(3, bad, nullptr); }), "ZF_FAULT_EXIT"));
}

TEST_CASE("job control: a restart resumes the run folder automatically") {
  const std::vector<std::string> args{"train", "--resume", "runs/old", "--out", "runs/a"};
  CHECK(attempt_args(args, 1) == args);
  CHECK(attempt_args(args, 2) ==
        std::vector<std::string>{"train", "--out", "runs/a", "--resume", "auto"});
  CHECK(attempt_args({"train", "--resume=latest"}, 3) ==
        std::vector<std::string>{"train", "--resume", "auto"});
}

TEST_CASE("job control: rank output is printed prefixed and kept per rank") {
  zf::testing::temp_dir d("rank-logs");
  std::vector<std::string> printed;
  {
    rank_logs logs((d.path / "logs").string(), [&](const std::string& l) { printed.push_back(l); });
    logs.note(1, "--- attempt 1 ---");
    logs.output(1, "a\nb\n");
    logs.output(0, "x\n");
    logs.output(1, "c");
  }
  CHECK(printed ==
        std::vector<std::string>{"[rank 1] a", "[rank 1] b", "[rank 0] x", "[rank 1] c"});
  CHECK(file_text(d.path / "logs" / "rank-1.log") == "--- attempt 1 ---\na\nb\nc");
  CHECK(file_text(d.path / "logs" / "rank-0.log") == "x\n");
}
