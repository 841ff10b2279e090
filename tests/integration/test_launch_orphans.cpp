// `zeroflow launch` SIGKILLed (no chance to forward a signal): its ranks must not keep running
// (issue 9: both ranks trained on, holding the rendezvous port). Each rank gets a parent-death
// signal, so they are gone within moments of the launcher.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "integration/helpers.hpp"

using zf::testing::temp_dir;
namespace fs = std::filesystem;

namespace {

// The children of pid, from /proc (empty once they are gone).
std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c = 0;
  while (in >> c) out.push_back(c);
  return out;
}

bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (stat.empty()) return false;
  const auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

}  // namespace

TEST_CASE("launch: ranks die with a SIGKILLed launcher") {
  temp_dir d("orphans");
  const std::string cmd =
      std::string(ZF_BINARY_DIR) +
      "/zeroflow launch --nproc 2 -- train --quiet --set train.steps=100000"
      " --set model.n_layer=1 --set model.n_head=2 --set model.n_embd=32"
      " --set model.n_positions=32 --set train.seq_len=32 --set train.batch_size=2"
      " --set train.threads=1 --set eval.every=0 --set checkpoint.every=0"
      " --set train.sample_tokens=0 --set data.data_dir=" ZF_DATA_DIR " --out " +
      (d.path / "run").string() + " > " + (d.path / "log").string() + " 2>&1";
  const pid_t launcher = ::fork();
  REQUIRE(launcher >= 0);
  if (launcher == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
    std::_Exit(127);
  }
  std::vector<pid_t> ranks;
  for (int i = 0; i < 600 && ranks.size() < 2; ++i) {  // both ranks started
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ranks = children_of(launcher);
  }
  REQUIRE(ranks.size() == 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // past their start-up checks
  ::kill(launcher, SIGKILL);
  int status = 0;
  ::waitpid(launcher, &status, 0);
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {  // up to 10 s
    gone = !alive(ranks[0]) && !alive(ranks[1]);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_MESSAGE(gone, "ranks " << ranks[0] << " and " << ranks[1] << " outlived their launcher");
  for (pid_t r : ranks) ::kill(r, SIGKILL);  // never leave them behind, even on failure
}

// A rank that outlives its SIGTERM (here: it ignores it, blocked on stdin) is SIGKILLed 10 s after
// another rank failed, and the launcher reports the first failure. The launcher keeps that
// deadline in its wait loop; it used a detached thread that read the rank table while the loop
// wrote it, which ThreadSanitizer reports (scripts/test --sanitize=thread) as a data race.
TEST_CASE("launch: a rank that ignores SIGTERM is SIGKILLed after another rank failed") {
  temp_dir d("sigterm");
  int in[2];
  REQUIRE(::pipe(in) == 0);  // the ranks' stdin: open and silent until the test ends
  // Ignored signals stay ignored across fork and exec, so both ranks ignore SIGTERM.
  const std::string cmd = "trap '' TERM; exec " + std::string(ZF_BINARY_DIR) +
                          "/zeroflow launch --nproc 2 -- tokenize --tokenizer gpt2 --ids"
                          " --data-dir " ZF_DATA_DIR " > " +
                          (d.path / "log").string() + " 2>&1";
  const pid_t launcher = ::fork();
  REQUIRE(launcher >= 0);
  if (launcher == 0) {
    ::dup2(in[0], 0);
    ::close(in[0]);
    ::close(in[1]);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    std::_Exit(127);
  }
  ::close(in[0]);
  std::vector<pid_t> ranks;
  for (int i = 0; i < 600 && ranks.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ranks = children_of(launcher);
  }
  REQUIRE(ranks.size() == 2);
  ::kill(ranks[1], SIGKILL);
  int status = 0;
  pid_t got = 0;
  for (int i = 0; i < 1200 && got == 0; ++i) {  // 10 s and the sanitizers' slack: up to 60 s
    got = ::waitpid(launcher, &status, WNOHANG);
    if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string log = zf::testing::slurp(d.path / "log");
  INFO(log);
  CHECK(got == launcher);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGKILL);  // rank 1's end, the first failure
  CHECK(log.find("rank 1 was killed by signal") != std::string::npos);
  CHECK_FALSE(alive(ranks[0]));
  for (pid_t r : ranks) ::kill(r, SIGKILL);
  if (got == 0) ::kill(launcher, SIGKILL), ::waitpid(launcher, &status, 0);
  ::close(in[1]);
}
