#include "runtime/cluster/rank_processes.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include "runtime/core/error.hpp"
#include "runtime/core/process.hpp"

extern char** environ;

namespace zf::cluster {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t line_cap = 64 * 1024;    // the most one output event carries (+ '\n')
constexpr std::size_t read_budget = 1 << 20;   // per rank and step: one chatty rank can't starve
constexpr milliseconds reap_check{50};         // a rank may exit while a grandchild holds its pipe
constexpr milliseconds after_eof_check{1};     // EOF came, the exit follows within microseconds
constexpr milliseconds after_eof_window{200};  // ...unless the rank only closed its stdout

struct rank_state {
  int rank = 0;
  pid_t pid = -1;         // the child (leader of its own group); valid until reaped
  pid_t pgid = -1;        // = pid, kept after the reap: grandchildren may still be in the group
  int fd = -1;            // read end of its stdout+stderr pipe, -1 once closed
  std::vector<char> buf;  // line_cap bytes, allocated once; [0, used) not yet delivered
  std::size_t used = 0;
  bool reaped = false;
  bool reported = false;  // its exited event went out
  int status = 0;
  clock::time_point eof_at{};
};

// What the child needs, built before fork: after fork only async-signal-safe calls are made (the
// parent has other threads, one of which may hold malloc's or the environment's lock).
struct spawn_plan {
  std::vector<std::string> argv_s, env_s;
  std::vector<char*> argv, envp;
  std::string exec_failed;  // message prefix when execve fails
  pid_t parent = 0;
  int devnull = -1;
  int write_fd = -1;
};

void build_plan(spawn_plan& p, const std::string& exe, const rank_launch& l) {
  p.argv_s = {exe};
  p.argv_s.insert(p.argv_s.end(), l.args.begin(), l.args.end());
  auto overridden = [&](std::string_view kv) {
    const auto name = kv.substr(0, kv.find('='));
    return std::any_of(l.env.begin(), l.env.end(), [&](auto& e) { return e.first == name; });
  };
  for (char** e = environ; e && *e; ++e)
    if (!overridden(*e)) p.env_s.emplace_back(*e);
  for (const auto& [k, v] : l.env) p.env_s.push_back(k + "=" + v);
  for (auto& a : p.argv_s) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);
  for (auto& e : p.env_s) p.envp.push_back(e.data());
  p.envp.push_back(nullptr);
  p.exec_failed = "rank " + std::to_string(l.rank) + ": cannot execute " + exe + ": ";
}

void write_all(int fd, const char* s) {
  for (std::size_t n = std::strlen(s); n > 0;) {
    const ssize_t w = ::write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= std::size_t(w);
  }
}

// The forked child: a clean signal state, its own session and process group, death with its
// parent, stdin from /dev/null, stdout and stderr onto the pipe, then the executable.
[[noreturn]] void child_main(const spawn_plan& p) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // ignored ones too
  ::setsid();
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != p.parent) ::_exit(1);  // the agent died before the line above
  // Above 2 first: a pipe or /dev/null that got fd 0..2 (closed std streams) would be clobbered.
  const int w = ::fcntl(p.write_fd, F_DUPFD_CLOEXEC, 3);
  const int in = ::fcntl(p.devnull, F_DUPFD_CLOEXEC, 3);
  if (w < 0 || ::dup2(w, 1) < 0 || ::dup2(w, 2) < 0) ::_exit(127);
  if (in >= 0) ::dup2(in, 0);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(p.argv[0], p.argv.data(), p.envp.data());
  const int err = errno;
  write_all(2, p.exec_failed.c_str());
  const char* why = ::strerrordesc_np(err);
  write_all(2, why ? why : "unknown error");
  write_all(2, "\n");
  ::_exit(127);
}

// Signals the rank's whole group; before the child's setsid() the group does not exist yet, so
// then the child itself (it is unreaped: the pid is still ours).
void signal_group(const rank_state& r, int sig) {
  if (r.pgid <= 0) return;
  if (::kill(-r.pgid, sig) != 0 && errno == ESRCH && !r.reaped) ::kill(r.pid, sig);
}

}  // namespace

struct rank_processes::impl {
  std::vector<rank_state> ranks;
  std::vector<pollfd> fds;  // reused by every wait
  std::atomic<std::uint64_t> stop_seq{0};
  std::atomic<std::int64_t> stop_grace_ms{0};
  std::uint64_t stop_seen = 0;
  bool term_sent = false;
  std::optional<clock::time_point> kill_at;
  bool kill_sent = false;

  ~impl();
  void spawn(rank_state& r, const std::string& exe, const rank_launch& l, int devnull);
  void step(std::vector<rank_event>& out);
  void escalate_stop(clock::time_point now);
  void read_some(rank_state& r, std::vector<rank_event>& out);
  void emit_lines(rank_state& r, std::vector<rank_event>& out);
  void finish_output(rank_state& r, std::vector<rank_event>& out);
  void try_reap(rank_state& r);
  milliseconds next_wait(clock::time_point now) const;
  void wait_fds(milliseconds wait);
};

rank_processes::impl::~impl() {
  for (auto& r : ranks) signal_group(r, SIGKILL);
  for (auto& r : ranks) {
    if (!r.reaped && r.pid > 0) {
      int status = 0;
      while (::waitpid(r.pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    if (r.fd >= 0) ::close(r.fd);
  }
}

void rank_processes::impl::spawn(rank_state& r, const std::string& exe, const rank_launch& l,
                                 int devnull) {
  spawn_plan p;
  build_plan(p, exe, l);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
    fail("rank {}: cannot make its output pipe: {}", l.rank, std::strerror(errno));
  p.parent = ::getpid();
  p.devnull = devnull;
  p.write_fd = pipe_fds[1];
  // Signals stay blocked from fork until the child has reset its handlers: none of this
  // process's handlers may run in the child.
  sigset_t all, old;
  ::sigfillset(&all);
  // What this process's stdio still buffers would be copied into the child, and a runtime that
  // flushes at _exit (ThreadSanitizer's does) would write it into the rank's output.
  std::fflush(nullptr);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  const int err = errno;
  if (pid == 0) child_main(p);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(pipe_fds[1]);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    fail("rank {}: cannot start {}: fork: {}", l.rank, exe, std::strerror(err));
  }
  r.pid = r.pgid = pid;
  r.fd = pipe_fds[0];
  ::fcntl(r.fd, F_SETFL, ::fcntl(r.fd, F_GETFL) | O_NONBLOCK);
}

void rank_processes::impl::escalate_stop(clock::time_point now) {
  const auto seq = stop_seq.load(std::memory_order_acquire);
  if (seq != stop_seen) {
    stop_seen = seq;
    const auto at = now + milliseconds(stop_grace_ms.load(std::memory_order_relaxed));
    if (!kill_at || at < *kill_at) kill_at = at;
    if (!term_sent) {
      term_sent = true;
      for (auto& r : ranks)
        if (!r.reaped) signal_group(r, SIGTERM);
    }
  }
  if (kill_at && !kill_sent && now >= *kill_at) {
    kill_sent = true;
    for (auto& r : ranks) signal_group(r, SIGKILL);  // reaped leaders too: their grandchildren
  }
}

// The complete lines in the buffer as one event; a full buffer without a newline goes out as a
// cut line of its own.
void rank_processes::impl::emit_lines(rank_state& r, std::vector<rank_event>& out) {
  const char* b = r.buf.data();
  std::size_t n = 0;
  for (std::size_t i = r.used; i > 0; --i)
    if (b[i - 1] == '\n') {
      n = i;
      break;
    }
  std::string text;
  if (n > 0) {
    text.assign(b, n);
  } else if (r.used == line_cap) {
    n = line_cap;
    text.reserve(n + 1);
    text.assign(b, n);
    text += '\n';
  } else {
    return;
  }
  std::memmove(r.buf.data(), b + n, r.used - n);
  r.used -= n;
  out.push_back({rank_event::kind::output, r.rank, std::move(text), 0});
}

// Whatever is left, a final line without '\n' included, then the pipe closes.
void rank_processes::impl::finish_output(rank_state& r, std::vector<rank_event>& out) {
  emit_lines(r, out);
  if (r.used > 0) {
    std::string text(r.buf.data(), r.used);
    text += '\n';
    r.used = 0;
    out.push_back({rank_event::kind::output, r.rank, std::move(text), 0});
  }
  ::close(r.fd);
  r.fd = -1;
  r.eof_at = clock::now();
}

// Reads what the pipe holds (up to read_budget); EOF or a read error ends the rank's output.
void rank_processes::impl::read_some(rank_state& r, std::vector<rank_event>& out) {
  std::size_t total = 0;
  while (total < read_budget) {
    const ssize_t n = ::read(r.fd, r.buf.data() + r.used, line_cap - r.used);
    if (n > 0) {
      r.used += std::size_t(n);
      total += std::size_t(n);
      if (r.used == line_cap) emit_lines(r, out);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    finish_output(r, out);  // EOF (or a broken pipe: nothing more will come)
    return;
  }
  emit_lines(r, out);
}

void rank_processes::impl::try_reap(rank_state& r) {
  int status = 0;
  pid_t got;
  do got = ::waitpid(r.pid, &status, WNOHANG);
  while (got < 0 && errno == EINTR);
  if (got == 0) return;
  r.reaped = true;
  r.status = got == r.pid ? status : -1;  // -1: reaped by someone else (ECHILD)
  r.pid = -1;
}

void rank_processes::impl::step(std::vector<rank_event>& out) {
  escalate_stop(clock::now());
  for (auto& r : ranks) {
    if (r.fd >= 0) read_some(r, out);
    if (!r.reaped) try_reap(r);
    // Reaped: all it wrote is in the pipe now. Take that and close, even if a grandchild still
    // holds the write end (it would keep the exited event back forever).
    if (r.reaped && r.fd >= 0) {
      read_some(r, out);
      if (r.fd >= 0) finish_output(r, out);
    }
    if (r.reaped && r.fd < 0 && !r.reported) {
      r.reported = true;
      const bool known = r.status != -1;
      const int code = !known                  ? -1
                       : WIFEXITED(r.status)   ? WEXITSTATUS(r.status)
                       : WIFSIGNALED(r.status) ? 128 + WTERMSIG(r.status)
                                               : -1;
      out.push_back({rank_event::kind::exited, r.rank,
                     known ? describe_exit(r.status) : "was reaped elsewhere", code});
    }
  }
}

milliseconds rank_processes::impl::next_wait(clock::time_point now) const {
  milliseconds w = reap_check;
  for (const auto& r : ranks)
    if (!r.reaped && r.fd < 0 && now - r.eof_at < after_eof_window) w = after_eof_check;
  if (kill_at && !kill_sent)
    w = std::min(w, std::chrono::ceil<milliseconds>(std::max(*kill_at - now, clock::duration(0))));
  return w;
}

void rank_processes::impl::wait_fds(milliseconds wait) {
  fds.clear();
  for (const auto& r : ranks)
    if (r.fd >= 0) fds.push_back({r.fd, POLLIN, 0});
  ::poll(fds.data(), fds.size(), int(wait.count()));  // EINTR: the caller's loop steps again
}

rank_processes::rank_processes(const std::string& executable, std::vector<rank_launch> ranks)
    : impl_(std::make_unique<impl>()) {
  const std::string exe = executable.empty() ? self_executable() : executable;
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  impl_->ranks.reserve(ranks.size());
  impl_->fds.reserve(ranks.size());
  try {
    for (const auto& l : ranks) {
      auto& r = impl_->ranks.emplace_back();
      r.rank = l.rank;
      r.buf.resize(line_cap);
      impl_->spawn(r, exe, l, devnull);
    }
  } catch (...) {
    if (devnull >= 0) ::close(devnull);
    throw;  // impl's destructor kills and reaps the ranks already started
  }
  if (devnull >= 0) ::close(devnull);
}

rank_processes::~rank_processes() = default;

std::vector<rank_event> rank_processes::poll(std::chrono::milliseconds timeout) {
  std::vector<rank_event> out;
  const auto deadline = clock::now() + timeout;
  for (;;) {
    impl_->step(out);
    if (!out.empty() || all_exited()) return out;
    const auto now = clock::now();
    if (now >= deadline) return out;
    const auto left = std::chrono::ceil<milliseconds>(deadline - now);
    impl_->wait_fds(std::min(left, impl_->next_wait(now)));
  }
}

void rank_processes::request_stop(std::chrono::milliseconds grace) {
  impl_->stop_grace_ms.store(std::max<std::int64_t>(0, grace.count()), std::memory_order_relaxed);
  impl_->stop_seq.fetch_add(1, std::memory_order_release);
}

bool rank_processes::all_exited() const {
  return std::all_of(impl_->ranks.begin(), impl_->ranks.end(),
                     [](const rank_state& r) { return r.reported; });
}

std::vector<pid_t> rank_processes::pids() const {
  std::vector<pid_t> out;
  for (const auto& r : impl_->ranks) out.push_back(r.reaped ? -1 : r.pid);
  return out;
}

std::vector<rank_launch> launches_for(const node_share& s) {
  check_launch_args(s.args);
  if (s.world < 1 || s.nproc_per_node < 1 || s.node < 0 ||
      (s.node + 1) * s.nproc_per_node > s.world)
    fail("job {}: node {} with {} ranks each does not fit world {}", s.job, s.node,
         s.nproc_per_node, s.world);
  std::vector<rank_launch> out;
  for (int i = 0; i < s.nproc_per_node; ++i) {
    const rank_slot slot{s.node * s.nproc_per_node + i, i, s.node};
    rank_launch l{slot.rank, s.args,
                  rank_env(slot, s.world, s.nproc_per_node, s.master_host, s.master_port,
                           s.job_secret, s.node_host)};
    l.env.emplace_back("ZF_ATTEMPT", std::to_string(s.attempt));
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace zf::cluster
