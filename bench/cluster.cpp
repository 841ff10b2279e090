// bench_cluster: what the node agents cost a job's start, and how fast the launcher names a
// failure and restarts. Real processes, two "hosts" on this machine (agents on 127.0.0.1 and
// 127.0.0.2, both loopback), 4 ranks of a tiny model (2 layers, n_embd 32, train.threads=1,
// checkpoint.every=5). Every figure is the median of --reps runs:
//   first step: from the fork of `zeroflow launch` to the run's metrics.jsonl holding step 1, for
//     4 ranks over 2 agents x 2 ranks (agents already listening, as on a cluster) against
//     `launch --nproc 4` on this host (the baseline, alternating with it); the ratio is printed.
//   detection: from the moment the bench causes a failure to the moment the launcher's line
//     naming it is in its log (polled every 5 ms):
//       rank SIGKILL   kill(rank 1's pid from the "pids" line) after step 12;
//       rank exit 3    the agent of ranks 2-3 runs with ZF_FAULT_EXIT=3:12:3, so rank 3 calls
//                      _Exit(3) after step 12; measured from the exit seen by polling the pid
//                      (gone or a zombie) every 5 ms;
//       agent SIGSTOP  the agent of ranks 2-3 frozen after step 3 (it beats once a second and
//                      the launcher names it 5 s after the last beat, on a 250 ms tick: 4-5.25 s);
//       agent SIGKILL  the agent of ranks 2-3 killed after step 3.
//   restart: the rank-SIGKILL runs use --max-restarts 1: from the failure line to the first
//     metrics line of attempt 2 (the step after the last checkpoint), split into the stop (to the
//     "attempt 2" line) and the start.
// Every process started (agents, launchers and, through them, ranks) is killed by the end of each
// run: SIGCONT then SIGKILL, reaped; ranks the launcher named are checked to be gone.
// Writes under --dir (default bench-cluster, relative to the working directory) and deletes it.
// Last line: "cluster detect_s=X restart_s=Y first_step_agents_s=.. first_step_local_s=..
// detect_rank_kill_s=.. detect_rank_exit_s=.. detect_agent_stop_s=.. detect_agent_kill_s=..",
// detect_s being the worst of the four detections.
//   bench_cluster [--dir D] [--reps 3] [--zeroflow PATH] [--data DIR] [--keep]
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/error.hpp"

extern char** environ;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

using clk = std::chrono::steady_clock;
double secs(clk::duration d) {
  return std::chrono::duration<double>(d).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tail(const std::string& s, std::size_t n = 1500) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

struct options {
  fs::path zeroflow, data, work, token;
  int reps = 3;
};

// One zeroflow process in its own process group, stdout and stderr into `log`.
struct child {
  pid_t pid = -1;
  int code = -1;
  fs::path log;
  child(const options& o, const std::vector<std::string>& args, fs::path log_file,
        const std::vector<std::string>& env)
      : log(std::move(log_file)) {
    // argv and envp built before fork: the child only calls async-signal-safe functions
    std::vector<std::string> av{o.zeroflow.string()};
    av.insert(av.end(), args.begin(), args.end());
    std::vector<std::string> ev;
    for (char** e = environ; *e; ++e)
      if (!std::string_view(*e).starts_with("ZF_FAULT_EXIT=")) ev.emplace_back(*e);
    ev.insert(ev.end(), env.begin(), env.end());
    std::vector<char*> argv, envp;
    for (auto& s : av) argv.push_back(s.data());
    for (auto& s : ev) envp.push_back(s.data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) zf::fail("cannot create {}", log.string());
    pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      ::chdir(o.work.c_str());
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(fd);
    if (pid < 0) zf::fail("fork failed");
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  // True once the process ended (and was reaped; its code in `code`).
  bool exited() {
    int st = 0;
    if (pid > 0 && ::waitpid(pid, &st, WNOHANG) == pid) {
      pid = -1;
      code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return pid <= 0;
  }
  // SIGCONT (it may be stopped) and SIGKILL to the process and its group, then reaped.
  void end() {
    if (pid <= 0) return;
    ::kill(pid, SIGCONT);
    ::kill(pid, SIGKILL);
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~child() { end(); }
};

// A process that is gone: reaped, or a zombie nobody has reaped yet.
bool gone(int pid) {
  if (::kill(pid, 0) != 0) return true;
  const std::string s = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = s.rfind(')');
  return close != std::string::npos && s.size() > close + 2 && s[close + 2] == 'Z';
}

// Every "pids A,B" the launcher printed, in order.
std::vector<int> rank_pids(const std::string& out) {
  std::vector<int> pids;
  const std::regex re("pids ([0-9,]+)");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    std::stringstream ss((*it)[1].str());
    for (std::string p; std::getline(ss, p, ',');) pids.push_back(std::stoi(p));
  }
  return pids;
}

// The tiny model of tests/agents/test_cluster_agents.cpp, writing into `out`.
std::vector<std::string> train_args(const options& o, int steps, const fs::path& out) {
  std::vector<std::string> a{"train"};
  for (const std::string& s : std::vector<std::string>{
           "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.n_positions=32",
           "train.seq_len=32", "train.batch_size=1", "train.steps=" + std::to_string(steps),
           "schedule.warmup=4", "optimizer.lr=3e-3", "eval.every=0", "checkpoint.every=5",
           "train.sample_tokens=0", "train.threads=1", "zero.stage=2",
           "data.data_dir=" + o.data.string()})
    a.insert(a.end(), {"--set", s});
  a.insert(a.end(), {"--out", out.string()});
  return a;
}

struct agent {
  std::unique_ptr<child> p;
  std::string addr;  // HOST:PORT from its "listening on" line
};

agent start_agent(const options& o, const fs::path& dir, const std::string& host,
                  const std::vector<std::string>& env) {
  agent a;
  a.p = std::make_unique<child>(
      o, std::vector<std::string>{"node", "--listen", host + ":0", "--token", o.token.string()},
      dir / ("agent-" + host + ".log"), env);
  const std::regex re("listening on (\\S+)");
  const auto end = clk::now() + 20s;
  for (std::smatch m;;) {
    const std::string s = slurp(a.p->log);
    if (std::regex_search(s, m, re)) {
      a.addr = m[1];
      return a;
    }
    if (a.p->exited() || clk::now() > end)
      zf::fail("agent on {} did not start listening: {}", host, tail(s));
    std::this_thread::sleep_for(5ms);
  }
}

// One launch: its folder (launch.log, run/), its agents (none for --nproc) and the launcher. At
// scope exit the launcher and the agents are killed (their ranks die with them: PDEATHSIG), and
// every rank the launcher named is checked to be gone (killed if still there).
struct job {
  fs::path dir;
  std::vector<agent> agents;
  std::unique_ptr<child> launcher;
  clk::time_point started;
  fs::path log() const { return dir / "launch.log"; }
  fs::path metrics() const { return dir / "run" / "metrics.jsonl"; }
  job() = default;
  job(const job&) = delete;
  job& operator=(const job&) = delete;
  ~job() {
    if (launcher) launcher->end();
    for (auto& a : agents) a.p->end();
    const auto pids = rank_pids(slurp(log()));
    for (int p : pids)
      if (!gone(p) &&
          slurp("/proc/" + std::to_string(p) + "/cmdline").find("zeroflow") != std::string::npos)
        ::kill(p, SIGKILL);
    const auto end = clk::now() + 10s;
    while (!std::all_of(pids.begin(), pids.end(), gone) && clk::now() < end)
      std::this_thread::sleep_for(20ms);
    for (int p : pids)
      if (!gone(p)) std::cerr << fmt::format("bench_cluster: rank pid {} still running\n", p);
  }
};

// agents: 2 x 2 ranks (the second agent's environment gets `env_b`); else launch --nproc 4.
std::unique_ptr<job> start_job(const options& o, const std::string& name, bool agents, int steps,
                               const std::vector<std::string>& launch_extra = {},
                               const std::vector<std::string>& env_b = {}) {
  auto j = std::make_unique<job>();
  j->dir = o.work / name;
  fs::create_directories(j->dir);
  std::vector<std::string> args{"launch"};
  if (agents) {
    j->agents.push_back(start_agent(o, j->dir, "127.0.0.1", {}));
    j->agents.push_back(start_agent(o, j->dir, "127.0.0.2", env_b));
    args.insert(args.end(), {"--nodes", j->agents[0].addr + "," + j->agents[1].addr, "--token",
                             o.token.string(), "--nproc-per-node", "2"});
  } else {
    args.insert(args.end(), {"--nproc", "4"});
  }
  args.insert(args.end(), launch_extra.begin(), launch_extra.end());
  args.push_back("--");
  const auto t = train_args(o, steps, j->dir / "run");
  args.insert(args.end(), t.begin(), t.end());
  j->started = clk::now();
  j->launcher = std::make_unique<child>(o, args, j->log(), std::vector<std::string>{});
  return j;
}

// The moment `file` is seen holding `needle` (polled every 5 ms); fails after `timeout` or when
// the launcher ended without it.
clk::time_point wait_for(job& j, const fs::path& file, const std::string& needle,
                         clk::duration timeout) {
  const auto end = clk::now() + timeout;
  for (;;) {
    const bool ended = j.launcher->exited();  // before the read: a last line is not missed
    if (slurp(file).find(needle) != std::string::npos) return clk::now();
    if (ended || clk::now() > end)
      zf::fail(
          "{}: no '{}' in {} ({}): {}", j.dir.filename().string(), needle, file.filename().string(),
          ended ? fmt::format("the launcher exited with code {}", j.launcher->code) : "timed out",
          tail(slurp(j.log())));
    std::this_thread::sleep_for(5ms);
  }
}

std::string step_needle(int step) {
  return fmt::format("\"step\":{},", step);
}

// Ranks a-b's pids from the launcher's "ranks a-b on HOST:PORT: pids P,Q" line.
std::pair<int, int> pids_of(job& j, const std::string& ranks) {
  wait_for(j, j.log(), ranks + " on ", 60s);
  std::smatch m;
  const std::string s = slurp(j.log());
  if (!std::regex_search(s, m, std::regex(ranks + " on \\S+: pids ([0-9]+),([0-9]+)")))
    zf::fail("no pids for {} in the launch log: {}", ranks, tail(s));
  return {std::stoi(m[1]), std::stoi(m[2])};
}

double first_step(const options& o, bool agents, int rep) {
  auto j = start_job(o, fmt::format("first-{}-{}", agents ? "agents" : "local", rep), agents, 3);
  const auto t = wait_for(*j, j->metrics(), step_needle(1), 120s);
  return secs(t - j->started);
}

struct restart_figure {
  double detect = 0, stop = 0, start = 0;
  int step = 0;  // attempt 2's first step
};

// The first complete metrics line written after byte `from` (the file rewritten: from 0) and the
// moment it was seen: attempt 2's first step.
std::pair<int, clk::time_point> next_step(job& j, std::size_t from) {
  const auto end = clk::now() + 120s;
  const std::regex re("\"step\":([0-9]+)");
  for (std::smatch m;;) {
    const bool ended = j.launcher->exited();
    std::string s = slurp(j.metrics());
    if (s.size() < from) from = 0;
    s = s.substr(from);
    if (const auto nl = s.find('\n'); nl != std::string::npos) {
      const std::string line = s.substr(0, nl);
      if (std::regex_search(line, m, re)) return {std::stoi(m[1]), clk::now()};
      from += nl + 1;
      continue;
    }
    if (ended || clk::now() > end)
      zf::fail("{}: attempt 2 wrote no step: {}", j.dir.filename().string(), tail(slurp(j.log())));
    std::this_thread::sleep_for(5ms);
  }
}

// Rank 1 SIGKILLed after step 12 (the last checkpoint: step 10) under --max-restarts 1.
restart_figure rank_kill(const options& o, int rep) {
  auto j = start_job(o, fmt::format("rank-kill-{}", rep), true, 2000, {"--max-restarts", "1"});
  const int rank1 = pids_of(*j, "ranks 0-1").second;
  wait_for(*j, j->metrics(), step_needle(12), 120s);
  ::kill(rank1, SIGKILL);
  const auto killed = clk::now();
  const auto named =
      wait_for(*j, j->log(), "rank 1 on " + j->agents[0].addr + " was killed by signal", 30s);
  const auto again = wait_for(*j, j->log(), "attempt 2:", 60s);
  const std::size_t size = slurp(j->metrics()).size();
  const auto [step, stepped] = next_step(*j, size);
  return {secs(named - killed), secs(again - named), secs(stepped - again), step};
}

// Rank 3 exits with code 3 after step 12 (ZF_FAULT_EXIT in its agent's environment): from the
// exit seen by polling its pid to the launcher's line.
double rank_exit(const options& o, int rep) {
  auto j = start_job(o, fmt::format("rank-exit-{}", rep), true, 2000, {}, {"ZF_FAULT_EXIT=3:12:3"});
  const int rank3 = pids_of(*j, "ranks 2-3").second;
  const std::string needle = "rank 3 on " + j->agents[1].addr + " exited with code 3";
  std::optional<clk::time_point> exited;
  auto alive = clk::now();
  const auto end = clk::now() + 120s;
  for (;;) {
    const auto now = clk::now();
    if (!exited) {
      if (gone(rank3))
        exited = now;
      else
        alive = now;
    }
    if (slurp(j->log()).find(needle) != std::string::npos)
      return secs(clk::now() - exited.value_or(alive));  // not seen gone yet: since last alive
    if (now > end || j->launcher->exited())
      zf::fail("rank-exit-{}: no '{}': {}", rep, needle, tail(slurp(j->log())));
    std::this_thread::sleep_for(5ms);
  }
}

// The agent of ranks 2-3 gets `sig` after step 3.
double agent_fault(const options& o, int sig, int rep) {
  auto j =
      start_job(o, fmt::format("agent-{}-{}", sig == SIGSTOP ? "stop" : "kill", rep), true, 2000);
  pids_of(*j, "ranks 2-3");
  wait_for(*j, j->metrics(), step_needle(3), 120s);
  ::kill(j->agents[1].p->pid, sig);
  const auto hit = clk::now();
  const std::string what = sig == SIGSTOP ? "stopped answering" : "lost its connection";
  const auto named =
      wait_for(*j, j->log(), "node " + j->agents[1].addr + " (ranks 2-3) " + what, 60s);
  return secs(named - hit);
}

fs::path default_zeroflow() {  // build/bench/bench_cluster -> build/zeroflow
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("zeroflow") : self.parent_path().parent_path() / "zeroflow";
}

fs::path default_data() {
  if (const char* e = std::getenv("ZF_DATA_DIR"); e && *e) return e;
  return ZF_DEFAULT_DATA_DIR;
}

struct figures {
  std::vector<double> agents, local, rank_kill, rank_exit, agent_stop, agent_kill, restart;
};

void run_first_steps(const options& o, figures& f) {
  for (int r = 0; r < o.reps; ++r) {
    for (int k = 0; k < 2; ++k) {  // alternate which goes first: drift hits both alike
      const bool agents = (k + r) % 2 == 0;
      (agents ? f.agents : f.local).push_back(first_step(o, agents, r + 1));
    }
    std::cout << fmt::format(
                     "first step, rep {}: 2 agents x 2 ranks {:.3f} s, launch --nproc 4 {:.3f} s\n",
                     r + 1, f.agents.back(), f.local.back())
              << std::flush;
  }
}

void run_failures(const options& o, figures& f) {
  for (int r = 0; r < o.reps; ++r) {
    const auto k = rank_kill(o, r + 1);
    f.rank_kill.push_back(k.detect);
    f.restart.push_back(k.stop + k.start);
    f.rank_exit.push_back(rank_exit(o, r + 1));
    f.agent_stop.push_back(agent_fault(o, SIGSTOP, r + 1));
    f.agent_kill.push_back(agent_fault(o, SIGKILL, r + 1));
    std::cout << fmt::format(
                     "failures, rep {}: named after rank SIGKILL {:.3f} s, rank exit 3 {:.3f} s, "
                     "agent SIGSTOP {:.3f} s, agent SIGKILL {:.3f} s; restart {:.3f} s (stop "
                     "{:.3f} s + start {:.3f} s, attempt 2 began at step {})\n",
                     r + 1, k.detect, f.rank_exit.back(), f.agent_stop.back(), f.agent_kill.back(),
                     k.stop + k.start, k.stop, k.start, k.step)
              << std::flush;
  }
}

options parse(int argc, char** argv, fs::path& dir) {
  options o;
  o.zeroflow = default_zeroflow();
  o.data = default_data();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) zf::fail("{} needs a value", a);
      return argv[++i];
    };
    if (a == "--dir")
      dir = next();
    else if (a == "--reps")
      o.reps = std::max(1, std::stoi(next()));
    else if (a == "--zeroflow")
      o.zeroflow = next();
    else if (a == "--data")
      o.data = next();
    else if (a != "--keep")
      zf::fail("unknown option {} (--dir D --reps N --zeroflow PATH --data DIR --keep)", a);
  }
  if (!fs::is_regular_file(o.zeroflow))
    zf::fail("no zeroflow binary at {} (build the zeroflow target, or pass --zeroflow PATH)",
             o.zeroflow.string());
  if (!fs::is_directory(o.data))
    zf::fail("no data folder at {} (pass --data DIR or set ZF_DATA_DIR)", o.data.string());
  o.zeroflow = fs::absolute(o.zeroflow);
  o.data = fs::absolute(o.data);
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  fs::path dir = "bench-cluster";
  options o = parse(argc, argv, dir);
  const bool keep = std::find_if(argv + 1, argv + argc, [](const char* a) {
                      return std::string_view(a) == "--keep";
                    }) != argv + argc;
  const bool made_dir = !fs::exists(dir);
  fs::create_directories(dir);
  o.work = fs::absolute(dir / fmt::format("bench-{}", ::getpid()));
  fs::create_directories(o.work);
  struct cleanup {
    fs::path work, dir;
    bool made, keep;
    ~cleanup() {
      if (keep) return;
      std::error_code ec;
      fs::remove_all(work, ec);
      if (made) fs::remove(dir, ec);  // only if empty
    }
  } clean{o.work, dir, made_dir, keep};
  o.token = o.work / "token";
  std::ofstream(o.token) << "bench-cluster-token-0123456789\n";
  ::chmod(o.token.c_str(), 0600);
  std::cout << fmt::format(
      "4 ranks of a 2-layer n_embd=32 model (train.threads=1, checkpoint.every=5); agents on "
      "127.0.0.1 and 127.0.0.2; {} repetitions; zeroflow {}; work in {}\n",
      o.reps, o.zeroflow.string(), o.work.string());

  figures f;
  const auto t0 = clk::now();
  run_first_steps(o, f);
  run_failures(o, f);
  const double agents = median(f.agents), local = median(f.local);
  const double rk = median(f.rank_kill), re = median(f.rank_exit), as = median(f.agent_stop),
               ak = median(f.agent_kill), restart = median(f.restart);
  const double detect = std::max({rk, re, as, ak});
  std::cout << fmt::format(
      "first step (median of {}): 2 agents x 2 ranks {:.3f} s, launch --nproc 4 {:.3f} s; "
      "agents / local = {:.2f}\n",
      o.reps, agents, local, agents / local);
  std::cout << fmt::format(
      "failure named (median of {}): rank SIGKILL {:.3f} s, rank exit 3 {:.3f} s, agent SIGSTOP "
      "{:.3f} s (5 s after the agent's last beat, one a second), agent SIGKILL {:.3f} s; worst "
      "{:.3f} s against "
      "the issue's 10 s\n",
      o.reps, rk, re, as, ak, detect);
  std::cout << fmt::format(
      "restart (median of {}): {:.3f} s from the rank-SIGKILL line to attempt 2's first step "
      "(bench took {:.0f} s)\n",
      o.reps, restart, secs(clk::now() - t0));
  std::cout << fmt::format(
                   "cluster detect_s={:.3f} restart_s={:.3f} first_step_agents_s={:.3f} "
                   "first_step_local_s={:.3f} detect_rank_kill_s={:.3f} detect_rank_exit_s={:.3f} "
                   "detect_agent_stop_s={:.3f} detect_agent_kill_s={:.3f}\n",
                   detect, restart, agents, local, rk, re, as, ak)
            << std::flush;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_cluster: error: " << e.what() << "\n";
  return 1;
}
