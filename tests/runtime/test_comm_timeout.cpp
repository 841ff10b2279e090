// Gloo collectives never hang on a dead or frozen peer: past gloo_options::op_timeout each
// collective throws zf::error naming the op, the limit and the key that sets it (a peer thread
// that joined the group but never enters; a peer process stopped with SIGSTOP), and a peer
// process that dies fails the survivor's collective at once, saying its connection closed.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/dist/comm.hpp"
#include "test_util.hpp"

namespace {

using namespace zf::comm;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

gloo_options short_timeouts(milliseconds op) {
  gloo_options o;
  o.rendezvous_timeout = std::chrono::seconds(10);
  o.op_timeout = op;
  o.timeout_key = "train.comm_timeout_s";
  return o;
}

// Rank 1 of a 2-rank group on a thread: joins the group, then waits without entering any
// collective until released (at scope exit at the latest, so a failed check never hangs). Both
// threads share one store object: two file stores of one process on one folder would pick the
// same temporary file names.
struct idle_peer {
  std::atomic<bool> release{false};
  std::string error;
  std::thread t;
  idle_peer(std::shared_ptr<kv_store> store, const std::string& prefix, const gloo_options& o) {
    t = std::thread([this, store, prefix, o] {
      try {
        auto c = make_gloo(1, 2, store, "127.0.0.1", prefix, o);
        while (!release) std::this_thread::sleep_for(milliseconds(5));
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
  }
  void stop() {
    release = true;
    if (t.joinable()) t.join();
  }
  ~idle_peer() { stop(); }
};

// Rank 1 in a forked child: one all_reduce of [4] ones, then `after` (which may never return).
pid_t fork_peer(const std::filesystem::path& dir, const std::string& prefix, const gloo_options& o,
                const std::function<void(communicator&)>& after) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      auto c = make_gloo(1, 2, make_file_store(dir), "127.0.0.1", prefix, o);
      std::vector<float> x(4, 1.0f);
      c->all_reduce(x.data(), x.size());
      after(*c);
    } catch (...) {
      code = 1;
    }
    ::_exit(code);
  }
  return pid;
}

// Rank 0's side of fork_peer's first all_reduce: every element must be 2.
void first_all_reduce(communicator& c) {
  std::vector<float> x(4, 1.0f);
  c.all_reduce(x.data(), x.size());
  for (float v : x) REQUIRE(v == 2.0f);
}

}  // namespace

TEST_CASE("comm: gloo collectives whose peer never enters fail within op_timeout, naming it") {
  const gloo_options o = short_timeouts(milliseconds(500));
  std::vector<float> buf(2048, 1.0f), out(1024);
  const std::vector<std::pair<std::string, std::function<void(communicator&)>>> ops = {
      {"all_reduce", [&](communicator& c) { c.all_reduce(buf.data(), buf.size()); }},
      {"reduce_scatter", [&](communicator& c) { c.reduce_scatter(buf.data(), out.data(), 1024); }},
      {"all_gather", [&](communicator& c) { c.all_gather(out.data(), buf.data(), 1024); }},
      {"broadcast", [&](communicator& c) { c.broadcast(buf.data(), buf.size(), 1); }},
      {"barrier", [&](communicator& c) { c.barrier(); }},
  };
  for (const auto& [name, call] : ops) {
    CAPTURE(name);
    temp_dir dir("comm_idle");
    const auto store = make_file_store(dir.path);
    idle_peer peer(store, "idle", o);
    auto c = make_gloo(0, 2, store, "127.0.0.1", "idle", o);
    const auto t0 = clock_type::now();
    const std::string what = error_of([&] { call(*c); });
    const auto took = clock_type::now() - t0;
    CAPTURE(what);
    CHECK(contains(what, "comm gloo: rank 0 of 2: " + name +
                             " did not complete within 500 ms (a peer died or stopped; limit set "
                             "by train.comm_timeout_s)"));
    CHECK(took >= milliseconds(450));
    CHECK(took < std::chrono::seconds(3));
    // The group is unusable afterwards, and says so instead of hanging.
    const auto t1 = clock_type::now();
    CHECK(error_of([&] { call(*c); }).starts_with("comm gloo"));
    CHECK(clock_type::now() - t1 < std::chrono::seconds(3));
    peer.stop();
    CHECK(peer.error.empty());  // it joined the group: the failure was the op's, not set-up's
  }
}

TEST_CASE("comm: gloo timeout without a key names the limit only") {
  temp_dir dir("comm_nokey");
  gloo_options o = short_timeouts(std::chrono::seconds(1));
  o.timeout_key.clear();
  const auto store = make_file_store(dir.path);
  idle_peer peer(store, "nokey", o);
  auto c = make_gloo(0, 2, store, "127.0.0.1", "nokey", o);
  std::vector<float> x(8, 1.0f);
  const std::string what = error_of([&] { c->all_reduce(x.data(), x.size()); });
  CHECK(contains(what, "all_reduce did not complete within 1 s (a peer died or stopped) [gloo: "));
}

TEST_CASE("comm: gloo peer process stopped with SIGSTOP fails the survivor within op_timeout") {
  temp_dir dir("comm_sigstop");
  const gloo_options o = short_timeouts(std::chrono::seconds(1));
  const pid_t pid = fork_peer(dir.path, "frozen", o, [](communicator& c) {
    std::vector<float> x(4, 1.0f);
    for (;;) c.all_reduce(x.data(), x.size());  // frozen in here by SIGSTOP
  });
  std::string what;
  clock_type::duration took{};
  try {
    auto c = make_gloo(0, 2, make_file_store(dir.path), "127.0.0.1", "frozen", o);
    first_all_reduce(*c);
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    std::vector<float> x(4, 1.0f);
    const auto t0 = clock_type::now();
    what = error_of([&] { c->all_reduce(x.data(), x.size()); });
    took = clock_type::now() - t0;
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  CAPTURE(what);
  CHECK(contains(what,
                 "comm gloo: rank 0 of 2: all_reduce did not complete within 1 s (a peer "
                 "died or stopped; limit set by train.comm_timeout_s)"));
  CHECK(took >= milliseconds(900));
  CHECK(took < std::chrono::seconds(3));
}

TEST_CASE("comm: gloo peer process that dies fails the survivor at once, saying so") {
  temp_dir dir("comm_died");
  // A long limit: the failure must come from the closed connection, not the clock. Gloo's write
  // to the dead socket raised SIGPIPE, which killed this process (exit 141) about one run in
  // three under load until make_gloo ignored it.
  const gloo_options o = short_timeouts(std::chrono::seconds(30));
  const pid_t pid = fork_peer(dir.path, "died", o, [](communicator&) { ::_exit(3); });
  std::string what;
  clock_type::duration took{};
  try {
    auto c = make_gloo(0, 2, make_file_store(dir.path), "127.0.0.1", "died", o);
    first_all_reduce(*c);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);  // gone, its sockets closed by the kernel
    CHECK(WEXITSTATUS(status) == 3);
    std::vector<float> x(4, 1.0f);
    const auto t0 = clock_type::now();
    what = error_of([&] { c->all_reduce(x.data(), x.size()); });
    took = clock_type::now() - t0;
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
  CAPTURE(what);
  CHECK(contains(what,
                 "comm gloo: rank 0 of 2: all_reduce failed: a peer closed its connection "
                 "(it died or exited) [gloo: "));
  CHECK(took < std::chrono::seconds(5));
}
