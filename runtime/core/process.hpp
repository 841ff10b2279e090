#pragma once
// Child processes of this binary: `zeroflow launch` starts its ranks with them, and an RLHF run
// its rollout engines in other processes (actors/engine_remote). A child dies with its parent
// (PR_SET_PDEATHSIG), so a SIGKILL of the parent never leaves one running.
#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zf {

// /proc/self/exe resolved; zf::error when it cannot be read.
std::string self_executable();

// "exited with code 3", "was killed by signal Killed" (a waitpid status).
std::string describe_exit(int status);

// 32 hex digits from std::random_device: a job's or a session's secret, a unique folder name.
std::string random_secret();

// A loopback TCP port nobody listens on right now.
int free_loopback_port();

// One child running `executable` ("" = this one) with `args` (argv[1..]) and `env` set on top of
// ours.
class child_process {
 public:
  child_process(const std::string& executable, const std::vector<std::string>& args,
                const std::vector<std::pair<std::string, std::string>>& env);
  ~child_process();  // kill_and_wait(): a child is never left behind
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  // How it ended (describe_exit) once it has, nullopt while it runs. Any thread.
  std::optional<std::string> exited();
  // Waits up to `timeout` for it to end, then SIGKILLs it; returns how it ended.
  std::string wait_or_kill(std::chrono::milliseconds timeout);

 private:
  std::optional<std::string> reap(int flags);
  std::mutex mu_;
  pid_t pid_ = -1;
  std::optional<std::string> ended_;
};

}  // namespace zf
