// Node agents and the launcher as processes, several "hosts" on one machine (127.0.0.1 and
// 127.0.0.2 are both loopback): a 2-node x 2-rank job follows the threads run's losses; a rank
// killed, a rank that exits with code 3, an agent frozen with SIGSTOP and an agent killed are
// each named within 10 s with nothing left running, and a restart resumes from the last
// checkpoint (to the uninterrupted final loss when the world is the same, on the remaining node
// with --min-nodes 1).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <thread>

#include "integration/helpers.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using zf::testing::slurp;
using zf::testing::temp_dir;

namespace {

// One zeroflow process, its output in `log`; killed (and continued, if stopped) at scope exit.
struct process {
  pid_t pid = -1;
  fs::path log;
  process(const std::string& args, fs::path log_file, const fs::path& cwd,
          const std::string& env = "")
      : log(std::move(log_file)) {
    pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      const std::string cmd = "cd " + cwd.string() + " && exec env " +
                              (env.empty() ? std::string("-u ZF_FAULT_EXIT") : env) + " " +
                              ZF_BINARY_DIR + "/zeroflow " + args + " > " + log.string() + " 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
      ::_exit(127);
    }
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  // The exit code, or -1 when it is still running after `timeout`.
  int wait(std::chrono::milliseconds timeout) {
    const auto end = clock_type::now() + timeout;
    while (pid > 0) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        break;
      }
      if (clock_type::now() > end) return -1;
      std::this_thread::sleep_for(20ms);
    }
    return code;
  }
  ~process() {
    if (pid <= 0) return;
    ::kill(pid, SIGCONT);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  int code = -1;
};

// Waits until `log` holds `needle`; false after `timeout`.
bool wait_for(const fs::path& log, const std::string& needle, std::chrono::milliseconds timeout) {
  const auto end = clock_type::now() + timeout;
  while (slurp(log).find(needle) == std::string::npos) {
    if (clock_type::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// An agent on `host`, port chosen by the kernel; port() reads it from the agent's first line.
struct agent {
  std::unique_ptr<process> p;
  std::string addr;
  agent(const std::string& host, const fs::path& dir, const fs::path& token,
        const std::string& env = "") {
    const auto log = dir / ("agent-" + host + ".log");
    p = std::make_unique<process>("node --listen " + host + ":0 --token " + token.string(), log,
                                  dir, env);
    REQUIRE_MESSAGE(wait_for(log, "listening on ", 20s), slurp(log));
    std::smatch m;
    const std::string s = slurp(log);
    REQUIRE(std::regex_search(s, m, std::regex("listening on (\\S+)")));
    addr = m[1];
  }
};

// A process that is gone: reaped, or a zombie nobody has reaped yet (its parent is stopped).
bool gone(int pid) {
  if (::kill(pid, 0) != 0) return true;
  const std::string s = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = s.rfind(')');
  return close != std::string::npos && s.size() > close + 2 && s[close + 2] == 'Z';
}

bool all_gone(const std::vector<int>& pids, std::chrono::milliseconds timeout) {
  const auto end = clock_type::now() + timeout;
  for (;;) {
    bool all = true;
    for (int p : pids) all = all && gone(p);
    if (all) return true;
    if (clock_type::now() > end) return false;
    std::this_thread::sleep_for(50ms);
  }
}

// Every "pids A,B" the launcher printed, in order.
std::vector<int> rank_pids(const std::string& out) {
  std::vector<int> pids;
  std::regex re("pids ([0-9,]+)");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    std::string list = (*it)[1];
    std::stringstream ss(list);
    for (std::string p; std::getline(ss, p, ',');) pids.push_back(std::stoi(p));
  }
  return pids;
}

// step -> loss from a run's metrics.jsonl (a restarted run repeats steps: the last line wins).
std::map<int, double> losses(const fs::path& run) {
  std::map<int, double> v;
  std::ifstream in(run / "metrics.jsonl");
  const std::regex step_re("\"step\":([0-9]+)"), loss_re("\"loss\":([-0-9.eE+]+)");
  std::smatch a, b;
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, a, step_re) && std::regex_search(line, b, loss_re))
      v[std::stoi(a[1])] = std::stod(b[1]);
  return v;
}

std::string train_args(int steps) {
  return fmt::format(
      "train --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32"
      " --set model.n_positions=32 --set train.seq_len=32 --set train.batch_size=1"
      " --set train.steps={} --set schedule.warmup=4 --set optimizer.lr=3e-3"
      " --set eval.every=0 --set checkpoint.every=5 --set train.sample_tokens=0"
      " --set train.threads=1 --set zero.stage=2 --set data.data_dir=" ZF_DATA_DIR,
      steps);
}

fs::path write_token(const fs::path& dir) {
  const auto path = dir / "token";
  std::ofstream(path) << "cluster-test-token-0123456789\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

// The reference: the same global batch as 4 thread ranks in one process.
std::map<int, double> threads_run(const fs::path& dir, int steps) {
  auto r = zf::testing::zeroflow(
      train_args(steps) + " --set train.ranks=4 --out " + (dir / "threads").string(), dir);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  return losses(dir / "threads");
}

std::string launch_args(const agent& a, const agent& b, const fs::path& token,
                        const std::string& extra) {
  return "launch --nodes " + a.addr + "," + b.addr + " --token " + token.string() +
         " --nproc-per-node 2 " + extra;
}

}  // namespace

TEST_CASE("cluster agents: 2 nodes x 2 ranks follow the threads run's losses") {
  temp_dir d("agents-losses");
  const auto token = write_token(d.path);
  agent a("127.0.0.1", d.path, token), b("127.0.0.2", d.path, token);
  process l(launch_args(a, b, token, "-- " + train_args(20) + " --out run"), d.path / "launch.log",
            d.path);
  REQUIRE_MESSAGE(l.wait(120s) == 0, slurp(l.log));
  const std::string out = slurp(l.log);
  CHECK(out.find("every rank finished (attempt 1)") != std::string::npos);
  CHECK(out.find("[rank 0] step 20/20") != std::string::npos);  // output streamed, prefixed
  for (int r = 0; r < 4; ++r)  // every rank's log, kept under the run folder
    CHECK(slurp(d.path / "run" / "logs" / fmt::format("rank-{}.log", r)).find("attempt 1") !=
          std::string::npos);
  CHECK(slurp(d.path / "run" / "logs" / "rank-0.log").find("step 20/20") != std::string::npos);
  auto ref = threads_run(d.path, 20), got = losses(d.path / "run");
  REQUIRE(ref.size() == 20);
  REQUIRE(got.size() == 20);
  for (auto [step, loss] : ref) {
    CAPTURE(step);
    CHECK(std::abs(got[step] - loss) <= 1e-5 * loss);
  }
}

TEST_CASE("cluster agents: a rank killed is named and the restart resumes to the same final loss") {
  temp_dir d("agents-kill-rank");
  const auto token = write_token(d.path);
  // rank 1 dies by SIGKILL after step 12 (first attempt only); the last checkpoint is step 10
  agent a("127.0.0.1", d.path, token, "ZF_FAULT_EXIT=1:12:kill"), b("127.0.0.2", d.path, token);
  process l(launch_args(a, b, token, "--max-restarts 1 -- " + train_args(20) + " --out run"),
            d.path / "launch.log", d.path);
  REQUIRE_MESSAGE(wait_for(l.log, "pids", 60s), slurp(l.log));
  for (int i = 0; i < 500 && rank_pids(slurp(l.log)).size() < 4; ++i)
    std::this_thread::sleep_for(20ms);
  const auto first = rank_pids(slurp(l.log));
  REQUIRE(first.size() == 4);
  int rank1 = 0;  // node 127.0.0.1 prints "ranks 0-1 ... pids P0,P1"
  {
    std::smatch m;
    const std::string s = slurp(l.log);
    REQUIRE(std::regex_search(s, m, std::regex("ranks 0-1 on \\S+: pids ([0-9]+),([0-9]+)")));
    rank1 = std::stoi(m[2]);
  }
  while (!gone(rank1)) std::this_thread::sleep_for(10ms);
  const auto died = clock_type::now();
  REQUIRE(wait_for(l.log, "rank 1 on " + a.addr + " was killed by signal", 10s));
  CHECK(clock_type::now() - died < 10s);
  CHECK(all_gone(first, 15s));  // every rank of the first attempt stopped
  REQUIRE_MESSAGE(l.wait(120s) == 0, slurp(l.log));
  const std::string out = slurp(l.log);
  CHECK(out.find("restart 1 of 1") != std::string::npos);
  CHECK(out.find("--resume auto") != std::string::npos);
  CHECK(out.find("every rank finished (attempt 2)") != std::string::npos);
  // from the last committed checkpoint: step 10's, or step 5's when step 10's commit (written
  // while training goes on) had not finished when rank 1 died
  CHECK(std::regex_search(out, std::regex("20 steps from step (10|5),")));
  auto ref = threads_run(d.path, 20), got = losses(d.path / "run");
  REQUIRE(got.count(20));
  CHECK(std::abs(got[20] - ref[20]) <= 1e-5 * ref[20]);
  CHECK(all_gone(rank_pids(out), 10s));
}

TEST_CASE(
    "cluster agents: a rank that exits with code 3 is named and the restart finishes the run") {
  temp_dir d("agents-exit3");
  const auto token = write_token(d.path);
  agent a("127.0.0.1", d.path, token), b("127.0.0.2", d.path, token, "ZF_FAULT_EXIT=3:12:3");
  process l(launch_args(a, b, token, "--max-restarts 1 -- " + train_args(20) + " --out run"),
            d.path / "launch.log", d.path);
  REQUIRE_MESSAGE(
      wait_for(l.log, "rank 3 on " + b.addr + " exited with code 3; stopping every rank", 60s),
      slurp(l.log));
  const auto first = rank_pids(slurp(l.log));
  CHECK(first.size() == 4);
  CHECK(all_gone(first, 15s));
  REQUIRE_MESSAGE(l.wait(120s) == 0, slurp(l.log));
  const std::string out = slurp(l.log);
  // from the last committed checkpoint: one write is in flight at a time, so by step 12 step 5's
  // is committed, and step 10's may be
  CHECK(std::regex_search(out, std::regex("20 steps from step (10|5),")));
  auto ref = threads_run(d.path, 20), got = losses(d.path / "run");
  REQUIRE(got.count(20));
  CHECK(std::abs(got[20] - ref[20]) <= 1e-5 * ref[20]);
}

TEST_CASE("cluster agents: without restarts the launch exits with the failing rank's code") {
  temp_dir d("agents-exit3-final");
  const auto token = write_token(d.path);
  agent a("127.0.0.1", d.path, token, "ZF_FAULT_EXIT=0:3:3"), b("127.0.0.2", d.path, token);
  process l(launch_args(a, b, token, "-- " + train_args(200) + " --out run"), d.path / "launch.log",
            d.path);
  CHECK(l.wait(120s) == 3);
  const std::string out = slurp(l.log);
  CHECK(out.find("rank 0 on " + a.addr + " exited with code 3; stopping every rank") !=
        std::string::npos);
  CHECK(out.find("the job failed") != std::string::npos);
  CHECK(all_gone(rank_pids(out), 10s));
}

TEST_CASE("cluster agents: a frozen agent is named and the job finishes on the remaining node") {
  temp_dir d("agents-sigstop");
  const auto token = write_token(d.path);
  agent a("127.0.0.1", d.path, token), b("127.0.0.2", d.path, token);
  process l(launch_args(a, b, token,
                        "--max-restarts 1 --min-nodes 1 -- " + train_args(150) +
                            " --set train.comm_timeout_s=8 --out run"),
            d.path / "launch.log", d.path);
  REQUIRE_MESSAGE(wait_for(d.path / "run" / "metrics.jsonl", "\"step\":6,", 60s), slurp(l.log));
  const auto first = rank_pids(slurp(l.log));  // both nodes said theirs before the first step
  REQUIRE(first.size() == 4);
  ::kill(b.p->pid, SIGSTOP);
  const auto stopped = clock_type::now();
  REQUIRE_MESSAGE(wait_for(l.log, "node " + b.addr + " (ranks 2-3) stopped answering", 10s),
                  slurp(l.log));
  CHECK(clock_type::now() - stopped < 10s);
  // The frozen node's ranks cannot be reached through their agent: they end when a collective
  // with their stopped peers fails, at the latest after train.comm_timeout_s.
  const bool frozen_ranks_gone = all_gone(first, 25s);
  std::string states;
  for (int p : first)
    states += std::to_string(p) + ": " +
              slurp("/proc/" + std::to_string(p) + "/stat").substr(0, 40) + "\n";
  CHECK_MESSAGE(frozen_ranks_gone, states);  // the frozen node's ranks too (their peers are gone)
  REQUIRE_MESSAGE(l.wait(120s) == 0, slurp(l.log));
  const std::string out = slurp(l.log);
  CHECK(out.find("attempt 2: 2 rank(s) on 1 node(s)") != std::string::npos);
  CHECK(out.find("every rank finished (attempt 2)") != std::string::npos);
  CHECK(losses(d.path / "run").count(150) == 1);
}

TEST_CASE("cluster agents: a killed agent is named and nothing of the job is left running") {
  temp_dir d("agents-kill-agent");
  const auto token = write_token(d.path);
  agent a("127.0.0.1", d.path, token), b("127.0.0.2", d.path, token);
  process l(launch_args(a, b, token, "-- " + train_args(200) + " --out run"), d.path / "launch.log",
            d.path);
  REQUIRE_MESSAGE(wait_for(d.path / "run" / "metrics.jsonl", "\"step\":3,", 60s), slurp(l.log));
  const auto first = rank_pids(slurp(l.log));
  REQUIRE(first.size() == 4);
  ::kill(b.p->pid, SIGKILL);
  const auto killed = clock_type::now();
  REQUIRE_MESSAGE(wait_for(l.log, "node " + b.addr + " (ranks 2-3) lost its connection", 10s),
                  slurp(l.log));
  CHECK(clock_type::now() - killed < 10s);
  CHECK(l.wait(60s) == 1);
  CHECK(all_gone(first, 15s));
}

TEST_CASE(
    "cluster agents: a wrong token, a loose token file and a foreign subcommand are refused") {
  temp_dir d("agents-refuse");
  const auto token = write_token(d.path);
  agent a("127.0.0.1", d.path, token), b("127.0.0.2", d.path, token);
  const auto wrong = d.path / "wrong";
  std::ofstream(wrong) << "another-token-0123456789\n";
  ::chmod(wrong.c_str(), 0600);
  auto r = zf::testing::zeroflow(launch_args(a, b, wrong, "-- " + train_args(5)), d.path);
  CHECK(r.code == 1);
  CHECK(r.out.find("refused the token") != std::string::npos);
  CHECK(slurp(d.path / "agent-127.0.0.1.log").find("refused a hello request") != std::string::npos);
  const auto loose = d.path / "loose";
  std::ofstream(loose) << "cluster-test-token-0123456789\n";
  ::chmod(loose.c_str(), 0644);
  r = zf::testing::zeroflow("node --listen 127.0.0.1:0 --token " + loose.string(), d.path);
  CHECK(r.code == 1);
  CHECK(r.out.find("chmod 600") != std::string::npos);
  r = zf::testing::zeroflow(launch_args(a, b, token, "-- serve --port 80"), d.path);
  CHECK(r.code == 1);
  CHECK(r.out.find("serve") != std::string::npos);
  r = zf::testing::zeroflow(launch_args(a, b, token, "-- train --out 'x;reboot'"), d.path);
  CHECK(r.code == 1);
  CHECK(r.out.find("metacharacter") != std::string::npos);
}
