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
