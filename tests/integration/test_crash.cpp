// Crash safety of training checkpoints: SIGKILL the training process at 20 moments while it
// checkpoints every step; after each kill `zeroflow ckpt verify` passes on what `latest` names
// and training resumes from it. Plus: resuming with a different model shape is refused by name.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "integration/helpers.hpp"
#include "storage/checkpoint.hpp"

using zf::testing::temp_dir;
using zf::testing::zeroflow;
namespace fs = std::filesystem;

namespace {
const std::string k_args =
    " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=64 --set model.n_positions=32"
    " --set train.seq_len=32 --set train.batch_size=2 --set train.threads=1"
    " --set eval.every=0 --set checkpoint.every=1 --set checkpoint.keep=2"
    " --set train.sample_tokens=0 --set data.data_dir=" ZF_DATA_DIR;

pid_t spawn_train(const fs::path& out, bool resume, const fs::path& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string cmd = std::string(ZF_BINARY_DIR) +
                      "/zeroflow train --quiet --set train.steps=100000" + k_args + " --out " +
                      out.string() + (resume ? " --resume latest" : "") + " >> " + log.string() +
                      " 2>&1";
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
    std::_Exit(127);
  }
  return pid;
}
}  // namespace

TEST_CASE("crash: SIGKILL during checkpoint writes never breaks latest") {
  temp_dir d("crash");
  auto out = d.path / "run";
  auto log = d.path / "log";
  std::mt19937 rng(11);
  int last_step = 0, kills = 0;
  for (int i = 0; i < 20; ++i) {
    CAPTURE(i);
    auto latest = out / "checkpoints" / "latest";
    auto stamp = [&] { return fs::exists(latest) ? zf::testing::slurp(latest) : std::string(); };
    const std::string before = stamp();
    // a kill before the first `latest` may still have left a complete step-000001: resume it
    pid_t pid = spawn_train(out, zf::storage::has_checkpoint(out / "checkpoints"), log);
    REQUIRE(pid > 0);
    // Wait (under any machine load) until this run has committed a checkpoint of its own, then
    // kill it a random moment later: it checkpoints every step, so the kill lands in a write, a
    // commit or a step.
    int status = 0;
    bool exited = false;  // a run that fails at start-up ends the wait at once
    for (int w = 0; w < 1200 && stamp() == before && !exited; ++w) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      exited = ::waitpid(pid, &status, WNOHANG) == pid;
    }
    if (!exited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 150));
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
    REQUIRE_MESSAGE(WIFSIGNALED(status), "training ended by itself: " << zf::testing::slurp(log));
    kills += WIFSIGNALED(status);
    if (!zf::storage::has_checkpoint(out / "checkpoints")) continue;  // killed before the first
    auto v = zeroflow("ckpt verify " + out.string(), d.path);
    INFO(v.out);
    CHECK(v.code == 0);
    auto head = zf::storage::read_manifest(out);
    CHECK(head.step >= last_step);  // latest never moves back
    last_step = head.step;
  }
  CHECK(kills >= 20);
  CHECK(last_step > 0);
  // and the run resumes from what latest names and finishes cleanly
  auto r = zeroflow("train --quiet --set train.steps=" + std::to_string(last_step + 2) + k_args +
                        " --out " + out.string() + " --resume latest",
                    d.path);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(zf::storage::read_manifest(out).step == last_step + 2);
}

TEST_CASE("crash: resuming with another model shape names the key") {
  temp_dir d("shape");
  auto out = d.path / "run";
  REQUIRE(zeroflow("train --quiet --set train.steps=2" + k_args + " --out " + out.string(), d.path)
              .code == 0);
  auto r = zeroflow("train --quiet --set train.steps=4" + k_args + " --set model.n_embd=32 --out " +
                        out.string() + " --resume latest",
                    d.path);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("model.n_embd is 64 in the checkpoint but 32") != std::string::npos);
}
