// rank_processes (runtime/cluster): real child processes (/bin/sh) whose output arrives as whole
// lines in order and before their exit, with the exit described; a stop ends every rank and
// what it started (SIGTERM, then SIGKILL to the group after the grace period); the destructor
// leaves no process behind.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cluster/rank_processes.hpp"
#include "runtime/core/process.hpp"

namespace {

using namespace std::chrono_literals;
using zf::cluster::rank_event;
using zf::cluster::rank_launch;
using zf::cluster::rank_processes;
using clk = std::chrono::steady_clock;

rank_launch sh(int rank, const std::string& script,
               std::vector<std::pair<std::string, std::string>> env = {}) {
  return {rank, {"-c", script}, std::move(env)};
}

// Polls until every rank has exited (at most `limit`), appending to `events`.
void run_out(rank_processes& rp, std::vector<rank_event>& events,
             std::chrono::milliseconds limit = 4000ms) {
  const auto end = clk::now() + limit;
  while (!rp.all_exited() && clk::now() < end) {
    auto got = rp.poll(100ms);
    events.insert(events.end(), got.begin(), got.end());
  }
  REQUIRE(rp.all_exited());
}

// Polls until `rank`'s output holds a whole line, and returns that output.
std::string first_line(rank_processes& rp, int rank, std::vector<rank_event>& events) {
  const auto end = clk::now() + 3000ms;
  std::string text;
  while (text.find('\n') == std::string::npos && clk::now() < end) {
    for (auto& e : rp.poll(50ms)) {
      if (e.rank == rank && e.what == rank_event::kind::output) text += e.text;
      events.push_back(std::move(e));
    }
  }
  REQUIRE(text.find('\n') != std::string::npos);
  return text.substr(0, text.find('\n'));
}

std::string output_of(const std::vector<rank_event>& events, int rank) {
  std::string text;
  for (const auto& e : events)
    if (e.rank == rank && e.what == rank_event::kind::output) text += e.text;
  return text;
}

// The rank's one exited event, after all of its output.
rank_event exit_of(const std::vector<rank_event>& events, int rank) {
  int exits = 0;
  rank_event ex;
  for (const auto& e : events) {
    if (e.rank != rank) continue;
    CHECK(exits == 0);  // nothing after the exit
    if (e.what == rank_event::kind::exited) {
      ++exits;
      ex = e;
    } else {
      CHECK(e.text.ends_with('\n'));
      CHECK(e.text.size() <= 64 * 1024 + 1);
    }
  }
  REQUIRE(exits == 1);
  return ex;
}

// No such process any more: gone, or a zombie its new parent has not reaped yet (an orphaned
// grandchild goes to init, which in a container may not reap).
bool dead(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  if (close == std::string::npos || close + 2 >= all.size()) return true;
  return all[close + 2] == 'Z' || all[close + 2] == 'X';
}

bool dies_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto end = clk::now() + limit;
  while (!dead(pid)) {
    if (clk::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

std::string killed_by(int sig) {
  return zf::describe_exit(sig);  // a waitpid status of "killed by sig" is sig itself
}

}  // namespace

TEST_CASE("rank processes: lines in order per rank, then the exit code and its text") {
  rank_processes rp("/bin/sh", {sh(0, "echo a; echo b >&2; echo c; exit 3"),
                                sh(5, "echo x; kill -9 $$"), sh(2, "exit 0")});
  const auto pids = rp.pids();
  REQUIRE(pids.size() == 3);
  for (pid_t p : pids) CHECK(p > 0);
  CHECK_FALSE(rp.all_exited());
  std::vector<rank_event> events;
  run_out(rp, events);
  CHECK(output_of(events, 0) == "a\nb\nc\n");
  CHECK(output_of(events, 5) == "x\n");
  CHECK(output_of(events, 2) == "");
  const auto e0 = exit_of(events, 0);
  CHECK(e0.exit_code == 3);
  CHECK(e0.text == "exited with code 3");
  const auto e5 = exit_of(events, 5);
  CHECK(e5.exit_code == 128 + 9);
  CHECK(e5.text == killed_by(SIGKILL));
  CHECK(e5.text == "was killed by signal Killed");
  CHECK(exit_of(events, 2).exit_code == 0);
  CHECK(rp.pids() == std::vector<pid_t>{-1, -1, -1});
  CHECK(rp.poll(0ms).empty());  // nothing twice
  for (pid_t p : pids) CHECK(dead(p));
}

TEST_CASE("rank processes: the variables reach the child on top of ours") {
  const char* path = std::getenv("PATH");
  REQUIRE(path != nullptr);
  rank_processes rp("/bin/sh", {sh(3, "echo \"$RANK|$ZF_TEST_VAR|$PATH\"",
                                   {{"RANK", "3"}, {"ZF_TEST_VAR", "a b;c"}}),
                                sh(4, "echo \"$RANK\"", {{"RANK", "4"}, {"PATH", "/nowhere"}})});
  std::vector<rank_event> events;
  run_out(rp, events);
  CHECK(output_of(events, 3) == "3|a b;c|" + std::string(path) + "\n");
  CHECK(output_of(events, 4) == "4\n");  // echo is built in: PATH=/nowhere is harmless
}

TEST_CASE("rank processes: a final line without newline is delivered completed") {
  rank_processes rp("/bin/sh", {sh(0, "printf abc"), sh(1, "printf 'x\\ny'; exit 1")});
  std::vector<rank_event> events;
  run_out(rp, events);
  CHECK(output_of(events, 0) == "abc\n");
  CHECK(output_of(events, 1) == "x\ny\n");
  CHECK(exit_of(events, 1).exit_code == 1);
}

TEST_CASE("rank processes: an executable that cannot run says why and exits 127") {
  rank_processes rp("/nonexistent/zf-rank", {{7, {"train"}, {}}});
  std::vector<rank_event> events;
  run_out(rp, events);
  CHECK(output_of(events, 7) ==
        "rank 7: cannot execute /nonexistent/zf-rank: No such file or directory\n");
  CHECK(exit_of(events, 7).exit_code == 127);
}

TEST_CASE("rank processes: 1 MiB of output arrives complete, long lines cut at 64 KiB") {
  // Rank 0: 65536 lines of 16 bytes. Rank 1: one line of 1 MiB without a newline.
  rank_processes rp("/bin/sh", {sh(0, "yes 0123456789abcde | head -n 65536"),
                                sh(1, "head -c 1048576 /dev/zero | tr '\\0' a")});
  std::vector<rank_event> events;
  run_out(rp, events);
  std::string want0;
  for (int i = 0; i < 65536; ++i) want0 += "0123456789abcde\n";
  CHECK(output_of(events, 0) == want0);  // in order, nothing lost or doubled
  std::string piece(64 * 1024, 'a');
  piece += '\n';
  std::string want1;
  for (int i = 0; i < 16; ++i) want1 += piece;
  CHECK(output_of(events, 1) == want1);
  CHECK(exit_of(events, 0).exit_code == 0);
  CHECK(exit_of(events, 1).exit_code == 0);
}

TEST_CASE("rank processes: a stop ends every rank and the processes they started") {
  rank_processes rp("/bin/sh", {sh(0, "sleep 100 & echo $!; wait"), sh(1, "sleep 100")});
  std::vector<rank_event> events;
  const pid_t grandchild = std::stoi(first_line(rp, 0, events));
  REQUIRE(grandchild > 0);
  CHECK_FALSE(dead(grandchild));
  const auto t0 = clk::now();
  std::thread([&] { rp.request_stop(3000ms); }).join();  // any thread may ask
  run_out(rp, events, 2000ms);
  CHECK(clk::now() - t0 < 1500ms);  // SIGTERM did it, not the SIGKILL after 3 s
  CHECK(exit_of(events, 0).exit_code == 128 + SIGTERM);
  CHECK(exit_of(events, 1).exit_code == 128 + SIGTERM);
  CHECK(exit_of(events, 1).text == killed_by(SIGTERM));
  CHECK(dies_within(grandchild, 2000ms));
}

TEST_CASE("rank processes: a rank that ignores SIGTERM is killed with its group after grace") {
  rank_processes rp("/bin/sh", {sh(0, "trap '' TERM; sleep 100 & echo $!; wait")});
  std::vector<rank_event> events;
  const pid_t grandchild = std::stoi(first_line(rp, 0, events));
  const auto t0 = clk::now();
  rp.request_stop(300ms);
  run_out(rp, events, 3000ms);
  const auto took = clk::now() - t0;
  CHECK(took >= 300ms);
  CHECK(took < 1500ms);
  CHECK(exit_of(events, 0).exit_code == 128 + SIGKILL);
  CHECK(dies_within(grandchild, 2000ms));  // ignored TERM too (inherited), killed with the group
}

TEST_CASE("rank processes: a grandchild holding the pipe does not hold back the exit") {
  std::vector<pid_t> pids;
  pid_t grandchild = -1;
  {
    rank_processes rp("/bin/sh", {sh(0, "sleep 100 & echo $!"), sh(1, "sleep 100")});
    pids = rp.pids();
    std::vector<rank_event> events;
    const auto t0 = clk::now();
    grandchild = std::stoi(first_line(rp, 0, events));
    while (clk::now() - t0 < 2000ms && rp.pids()[0] != -1) {
      auto got = rp.poll(50ms);
      events.insert(events.end(), got.begin(), got.end());
    }
    CHECK(clk::now() - t0 < 1000ms);  // noticed within a few polls
    CHECK(exit_of(events, 0).exit_code == 0);
    CHECK(output_of(events, 0) == std::to_string(grandchild) + "\n");
    CHECK_FALSE(rp.all_exited());  // rank 1 still sleeps
    CHECK_FALSE(dead(grandchild));
    CHECK_FALSE(dead(pids[1]));
  }  // the destructor kills both groups
  CHECK(dead(pids[0]));
  CHECK(dead(pids[1]));  // reaped by the destructor: gone at once
  CHECK(dies_within(grandchild, 2000ms));
}

TEST_CASE("rank processes: the destructor leaves no process") {
  std::vector<pid_t> pids;
  pid_t grandchild = -1;
  {
    rank_processes rp("/bin/sh", {sh(0, "sleep 100"), sh(1, "trap '' TERM; sleep 100"),
                                  sh(2, "sleep 100 & echo $!; wait")});
    pids = rp.pids();
    std::vector<rank_event> events;
    grandchild = std::stoi(first_line(rp, 2, events));
    for (pid_t p : pids) CHECK_FALSE(dead(p));
  }
  for (pid_t p : pids) {
    CAPTURE(p);
    CHECK(::kill(p, 0) == -1);
    CHECK(errno == ESRCH);
    CHECK(::waitpid(p, nullptr, WNOHANG) == -1);  // reaped: no longer our child
  }
  CHECK(dies_within(grandchild, 2000ms));
}
