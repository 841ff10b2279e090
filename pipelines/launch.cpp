#include "pipelines/launch.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <optional>
#include <random>
#include <thread>

#include "runtime/core/error.hpp"
#include "runtime/core/process.hpp"

namespace zf {
namespace {

// The ranks' pids, -1 once reaped. Atomic: the wait loop writes them while forward_signal reads
// them, and a signal may be handled on any thread of the launcher (OpenBLAS starts its own).
std::vector<std::atomic<pid_t>> g_children;
extern "C" void forward_signal(int sig) {
  for (const auto& c : g_children)
    if (const pid_t p = c.load(); p > 0) ::kill(p, sig);  // never kill(-1): every process
}

}  // namespace

int launch_local(int nproc, int master_port, const std::vector<std::string>& args) {
  if (nproc < 1) fail("launch --nproc: expected at least 1, got {}", nproc);
  if (args.empty()) fail("launch: give the subcommand to run, e.g. launch --nproc 2 -- train");
  if (master_port == 0) master_port = free_loopback_port();
  const std::string self = self_executable();
  std::vector<std::string> argv_s{self};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const pid_t launcher = ::getpid();
  // One secret per job for the rendezvous (a caller's own ZF_JOB_SECRET is kept).
  const char* given = std::getenv("ZF_JOB_SECRET");
  const std::string secret = given && *given ? given : random_secret();
  g_children = std::vector<std::atomic<pid_t>>(static_cast<std::size_t>(nproc));
  for (auto& c : g_children) c = -1;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = ::fork();
    if (pid < 0) fail("launch: fork failed: {}", std::strerror(errno));
    if (pid == 0) {
      // A rank dies with its launcher (a SIGKILL of `zeroflow launch` must not leave ranks
      // training, holding ports and GPUs); the signal survives exec. Had the launcher died
      // before this line, the rank's parent is already another process: leave now.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != launcher) std::_Exit(1);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(master_port).c_str(), 1);
      ::setenv("ZF_JOB_SECRET", secret.c_str(), 1);
      std::vector<char*> av;
      for (auto& a : argv_s) av.push_back(a.data());
      av.push_back(nullptr);
      ::execv(self.c_str(), av.data());
      std::_Exit(127);
    }
    g_children[static_cast<std::size_t>(r)] = pid;
  }
  auto prev_int = ::signal(SIGINT, forward_signal);
  auto prev_term = ::signal(SIGTERM, forward_signal);
  int code = 0;
  std::size_t alive = g_children.size();
  // Once a rank has failed, the others get SIGTERM, and SIGKILL 10 s later if still there (stuck
  // in a collective with the dead peer). That deadline is kept by this loop, which then polls,
  // not by a second thread: one reading g_children while this loop reaps would race with it,
  // and could signal a pid reaped (and reused by another process) in between.
  using clock = std::chrono::steady_clock;
  std::optional<clock::time_point> kill_at;
  while (alive > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, kill_at ? WNOHANG : 0);
    if (pid == 0) {  // polling, and no rank has ended yet
      if (clock::now() < *kill_at) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      for (const auto& c : g_children)  // unreaped children: these pids are still ours
        if (const pid_t p = c.load(); p > 0) ::kill(p, SIGKILL);
      kill_at.reset();  // a blocking wait again: SIGKILL cannot be ignored
      continue;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    --alive;
    int rank = 0;
    for (std::size_t i = 0; i < g_children.size(); ++i)
      if (g_children[i] == pid) rank = static_cast<int>(i), g_children[i] = -1;
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && code == 0) {
      code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // one write, so the line is not interleaved with the other ranks' output
      std::string msg = "zeroflow launch: rank " + std::to_string(rank) + " " +
                        describe_exit(status) + "; stopping the other ranks\n";
      [[maybe_unused]] auto w = ::write(2, msg.data(), msg.size());
      for (const auto& c : g_children)
        if (const pid_t p = c.load(); p > 0) ::kill(p, SIGTERM);
      kill_at = clock::now() + std::chrono::seconds(10);
    }
  }
  ::signal(SIGINT, prev_int);
  ::signal(SIGTERM, prev_term);
  return code;
}

}  // namespace zf
