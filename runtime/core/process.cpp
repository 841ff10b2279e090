#include "runtime/core/process.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <random>
#include <thread>

#include "runtime/core/error.hpp"

namespace zf {

std::string self_executable() {
  char self[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) fail("cannot find this executable: {}", std::strerror(errno));
  return self;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("was killed by signal ") + ::strsignal(WTERMSIG(status));
  return "stopped";
}

std::string random_secret() {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < 4; ++i) s += fmt::format("{:08x}", rd());
  return s;
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  const int err = errno;
  if (fd >= 0) ::close(fd);
  if (!ok) fail("cannot find a free port: {}", std::strerror(err));
  return ntohs(a.sin_port);
}

namespace {

// fork() on one thread that lives as long as the process: PR_SET_PDEATHSIG fires when the
// *thread* that forked the child ends, so a child forked from a short-lived thread (a rollout
// worker restarting its engine) would be killed with it.
pid_t fork_on_spawner(const std::function<void()>& child_main) {
  struct job {
    const std::function<void()>* child_main;
    pid_t pid = 0;
    int err = 0;
    bool done = false;
  };
  // Never destroyed: the spawner waits on them until the process exits (a static condition
  // variable's destructor would wait for it at exit).
  struct spawner {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<job*> jobs;
  };
  static spawner* const sp = new spawner;
  auto& mu = sp->mu;
  auto& cv = sp->cv;
  auto& jobs = sp->jobs;
  static std::once_flag started;
  std::call_once(started, [] {
    std::thread([] {
      auto& mu = sp->mu;
      auto& cv = sp->cv;
      auto& jobs = sp->jobs;
      for (;;) {
        job* j;
        {
          std::unique_lock lk(mu);
          cv.wait(lk, [&] { return !jobs.empty(); });
          j = jobs.front();
          jobs.pop_front();
        }
        const pid_t pid = ::fork();
        if (pid == 0) {
          (*j->child_main)();  // does not return
          std::_Exit(127);
        }
        {
          std::lock_guard lk(mu);
          j->pid = pid;
          j->err = errno;
          j->done = true;
        }
        cv.notify_all();
      }
    }).detach();
  });
  job j{&child_main};
  {
    std::lock_guard lk(mu);
    jobs.push_back(&j);
  }
  cv.notify_all();
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return j.done; });
  errno = j.err;
  return j.pid;
}

}  // namespace

child_process::child_process(const std::string& executable, const std::vector<std::string>& args,
                             const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<std::string> argv_s{executable.empty() ? self_executable() : executable};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const pid_t parent = ::getpid();
  const pid_t pid = fork_on_spawner([&] {
    // Dies with its parent; had the parent died before this line, leave now.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) std::_Exit(1);
    for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> av;
    for (auto& a : argv_s) av.push_back(a.data());
    av.push_back(nullptr);
    ::execv(argv_s[0].c_str(), av.data());
    std::_Exit(127);
  });
  if (pid < 0) fail("cannot start a process: fork: {}", std::strerror(errno));
  pid_ = pid;
}

child_process::~child_process() {
  wait_or_kill(std::chrono::seconds(10));
}

std::optional<std::string> child_process::reap(int flags) {
  std::lock_guard lk(mu_);
  if (ended_ || pid_ <= 0) return ended_;
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid_, &status, flags);
  while (r < 0 && errno == EINTR);
  if (r == pid_)
    ended_ = describe_exit(status);
  else if (r < 0)
    ended_ = std::string("is gone (") + std::strerror(errno) + ")";
  return ended_;
}

std::optional<std::string> child_process::exited() {
  return reap(WNOHANG);
}

std::string child_process::wait_or_kill(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto e = exited()) return *e;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  {
    std::lock_guard lk(mu_);
    if (!ended_ && pid_ > 0) ::kill(pid_, SIGKILL);  // not reaped yet: still our child
  }
  return *reap(0);
}

}  // namespace zf
