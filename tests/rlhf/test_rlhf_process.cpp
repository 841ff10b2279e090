// The rollout engine in a process of its own (rlhf.rollout_placement = process): the run is the
// in-process run bit for bit (overlap 1, weights over Gloo), and when the engine process is
// killed mid-run the run stops within seconds naming it, with its last checkpoint intact: the
// resumed run is the uninterrupted one, bit for bit.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

#include "rlhf_helpers.hpp"
#include "runtime/core/process.hpp"

using namespace zf;
using namespace zf::testing;

namespace {

const std::string zeroflow_bin = std::string(ZF_BINARY_DIR) + "/zeroflow";

// The first child of `pid` whose command line holds `what` (-1: none).
pid_t child_running(pid_t pid, const std::string& what) {
  for (const auto& t :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream f(t.path() / "children");
    for (pid_t p; f >> p;) {
      std::ifstream cmd("/proc/" + std::to_string(p) + "/cmdline");
      const std::string c((std::istreambuf_iterator<char>(cmd)), {});
      if (c.find(what) != std::string::npos) return p;
    }
  }
  return -1;
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// `zeroflow grpo` from the SFT fixture into d/run with `sets` and the engine in a process of its
// own, stderr to d/err, run until it has written `updates` metrics lines; returns it and the
// engine process's pid.
std::pair<std::unique_ptr<child_process>, pid_t> grpo_until(const std::filesystem::path& d,
                                                            const std::string& sets,
                                                            std::size_t updates) {
  const std::string cmd = "exec " + zeroflow_bin + " grpo --task reverse --quiet --checkpoint " +
                          rlhf_fixture("sft").string() + " --out " + (d / "run").string() + " " +
                          sets + " --set rlhf.rollout_placement=process 2> " + (d / "err").string();
  auto run = std::make_unique<child_process>("/bin/sh", std::vector<std::string>{"-c", cmd},
                                             std::vector<std::pair<std::string, std::string>>{});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_jsonl(d / "run" / "metrics.jsonl").size() < updates) {
    REQUIRE_MESSAGE(!run->exited(), read_text(d / "err"));
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const pid_t engine = child_running(run->pid(), "engine-host");
  REQUIRE(engine > 0);
  return {std::move(run), engine};
}

}  // namespace

TEST_CASE(
    "rlhf process: an engine in another process, or two engines, give the in-process run bit for "
    "bit") {
  temp_dir d("rlhf_process");
  const std::vector<std::string> sets = {"rlhf.steps=6", "rlhf.overlap=1", "rlhf.sync_bucket_mb=1"};
  const rl_outcome local = run_rl_stage(d / "local", sets);
  rl_run_options o;
  o.out = (d / "process").string();
  o.checkpoint = rlhf_fixture("sft").string();
  o.quiet = true;
  o.engine_executable = zeroflow_bin;
  auto with = sets;
  with.push_back("rlhf.rollout_placement=process");
  const rl_run_result r = run_rl(rlhf_config_with(with), o);
  const auto m = read_jsonl(d / "process" / "metrics.jsonl");
  CHECK(check_same_metrics(local.metrics, m) > 100);
  CHECK(r.rl.eval_before == local.result.rl.eval_before);
  CHECK(r.rl.eval_after == local.result.rl.eval_after);
  // Two engines in this process, requests alternating: the same run again.
  auto two = sets;
  two.push_back("rlhf.engines=2");
  const rl_outcome pool = run_rl_stage(d / "two", two);
  CHECK(check_same_metrics(local.metrics, pool.metrics) > 100);
  // weights moved (every version after the first, the whole model) and the folder is clean
  CHECK(m[2]["sync_bytes"].get<double>() > 400000);
  for (const auto& e : std::filesystem::directory_iterator(d / "process"))
    CHECK(e.path().filename().string().rfind(".engine-", 0) != 0);
}

TEST_CASE("rlhf process: a killed engine process stops the run by name, the checkpoint resumes") {
  temp_dir d("rlhf_process_kill");
  const auto out = d / "run";
  // A few updates (and checkpoints) in, the engine process is killed.
  auto [run, engine] = grpo_until(d.path, "--set rlhf.steps=400 --set checkpoint.every=2", 5);
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(engine, SIGKILL);
  const std::string ended = run->wait_or_kill(std::chrono::seconds(30));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(ended == "exited with code 1");
  CHECK(took < 10);
  const std::string err = read_text(d / "err");
  CHECK_MESSAGE(err.find("rollout engine (process " + std::to_string(engine) +
                         ") was killed by signal") != std::string::npos,
                err);
  const int done = static_cast<int>(read_jsonl(out / "metrics.jsonl").size());
  MESSAGE("engine killed after " << done << " updates; the run ended " << took << " s later");
  REQUIRE(done < 390);

  // The newest checkpoint resumes (in a new engine process) to the uninterrupted run's numbers.
  const int until = done + 3;
  rl_run_options again;
  again.out = out.string();
  again.resume = true;
  again.quiet = true;
  again.stop_after = until;
  again.engine_executable = zeroflow_bin;
  CHECK(run_rl(run_config{}, again).rl.steps == until);
  rl_run_options o;
  o.out = (d / "straight").string();
  o.checkpoint = rlhf_fixture("sft").string();
  o.quiet = true;
  o.stop_after = until;
  run_rl(rlhf_config_with({"rlhf.steps=400", "checkpoint.every=2"}), o);
  CHECK(check_same_metrics(read_jsonl(d / "straight" / "metrics.jsonl"),
                           read_jsonl(out / "metrics.jsonl")) > 100);
}

TEST_CASE("rlhf process: with rlhf.engine_restarts a killed engine is replaced, the same bits") {
  temp_dir d("rlhf_process_restart");
  const auto out = d / "run";
  auto [run, engine] = grpo_until(
      d.path, "--set rlhf.steps=40 --set rlhf.overlap=1 --set rlhf.engine_restarts=1", 5);
  ::kill(engine, SIGKILL);
  CHECK(run->wait_or_kill(std::chrono::seconds(120)) == "exited with code 0");
  const std::string err = read_text(d / "err");
  CHECK_MESSAGE(err.find("rollout engine (process " + std::to_string(engine) +
                         ") was killed by signal") != std::string::npos,
                err);
  CHECK_MESSAGE(err.find("restarting the rollout engine on version") != std::string::npos, err);
  // The replaced engine generated the batch again on the same version: the in-process run's
  // numbers, bit for bit.
  const rl_outcome straight = run_rl_stage(d / "straight", {"rlhf.steps=40", "rlhf.overlap=1"});
  CHECK(check_same_metrics(straight.metrics, read_jsonl(out / "metrics.jsonl")) > 500);
  CHECK(read_json(out / "summary.json")["eval_reward_after"] ==
        straight.summary["eval_reward_after"]);
}
