// ZeRO through the actors: N thread ranks at every stage follow the one-rank loss curve with the
// same global batch, and a checkpoint written at one (world, stage) resumes at another.
#include <doctest/doctest.h>
#include <signal.h>

#include <cmath>
#include <fstream>
#include <random>
#include <thread>

#include "integration/helpers.hpp"
#include "pipelines/pipeline.hpp"
#include "runtime/core/process.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using zf::testing::small_config;
using zf::testing::temp_dir;

namespace {
train_result run(run_config c, int ranks, int stage, const std::filesystem::path& out,
                 const std::string& resume = "", int stop_at = 0) {
  c.train.batch_size = 4 / ranks;  // global batch 4 rows
  pipeline p(c);
  p.add(stages::sampler{})
      .add(stages::train{.ranks = ranks, .zero_stage = stage})
      .add(stages::checkpoint{})
      .add(stages::monitor{.quiet = true});
  run_options o;
  o.out = out;
  o.print_sample = false;
  o.resume = resume;
  o.stop_at_step = stop_at;
  return p.run(o);
}
}  // namespace

TEST_CASE("zero train: stages 0-3 with 1, 2 and 4 ranks give the one-rank losses over 20 steps") {
  temp_dir d("zero-eq");
  run_config c = small_config();
  c.train.steps = 20;
  c.eval.every = 10;
  c.eval.batches = 2;
  auto ref = run(c, 1, 0, d.path / "ref");
  REQUIRE(ref.losses.size() == 20);
  for (int stage : {0, 1, 2, 3})
    for (int ranks : {1, 2, 4}) {
      CAPTURE(stage);
      CAPTURE(ranks);
      auto r = run(c, ranks, stage,
                   d.path / ("s" + std::to_string(stage) + "r" + std::to_string(ranks)));
      REQUIRE(r.losses.size() == 20);
      for (int s = 0; s < 20; ++s) {
        CAPTURE(s);
        CHECK(std::abs(r.losses[s] - ref.losses[s]) <= 1e-5 * std::abs(ref.losses[s]));
      }
      REQUIRE(r.val_losses.size() == ref.val_losses.size());
      for (std::size_t i = 0; i < r.val_losses.size(); ++i)
        CHECK(std::abs(r.val_losses[i].second - ref.val_losses[i].second) <=
              1e-5 * ref.val_losses[i].second);
    }
}

TEST_CASE("zero train: a checkpoint from N ranks at stage S resumes with M ranks at stage S'") {
  temp_dir d("zero-resume");
  run_config c = small_config();
  c.train.steps = 10;
  auto ref = run(c, 1, 0, d.path / "ref");
  int i = 0;
  for (auto [n, s, m, s2] :
       {std::tuple{2, 1, 4, 3}, {4, 3, 1, 0}, {1, 0, 2, 2}, {4, 2, 2, 1}, {2, 3, 4, 0}}) {
    CAPTURE(n);
    CAPTURE(s);
    CAPTURE(m);
    CAPTURE(s2);
    auto out = d.path / ("run" + std::to_string(i++));
    auto first = run(c, n, s, out, "", 5);
    REQUIRE(first.final_step == 5);
    auto second = run(c, m, s2, out, "latest");
    REQUIRE(second.losses.size() == 5);
    for (int k = 0; k < 5; ++k) {
      CAPTURE(k);
      CHECK(std::abs(second.losses[k] - ref.losses[5 + k]) <= 1e-5 * ref.losses[5 + k]);
    }
  }
}

TEST_CASE("zero train: stage 3 resume at the same world is bit-exact, moments included") {
  // Each rank wrote only its slices and reads only its slices back (storage/zero_checkpoint):
  // the continuation and the final state equal the uninterrupted run's bit for bit.
  temp_dir d("zero-exact");
  run_config c = small_config();
  c.train.steps = 10;
  auto full = run(c, 2, 3, d.path / "full");
  auto first = run(c, 2, 3, d.path / "split", "", 5);
  REQUIRE(first.final_step == 5);
  auto second = run(c, 2, 3, d.path / "split", "latest");
  REQUIRE(full.losses.size() == 10);
  REQUIRE(second.losses.size() == 5);
  for (int k = 0; k < 5; ++k) CHECK(second.losses[k] == full.losses[5 + k]);
  auto layout = layout_of(c.model);
  auto a = storage::load_checkpoint(d.path / "full", layout);
  auto b = storage::load_checkpoint(d.path / "split", layout);
  CHECK(b.step == 10);
  CHECK(a.params == b.params);
  CHECK(a.exp_avg == b.exp_avg);
  CHECK(a.exp_avg_sq == b.exp_avg_sq);
  CHECK(storage::read_checkpoint_manifest(d.path / "split").files.size() == 2);  // one per rank
}

TEST_CASE("zero train: 2 processes over Gloo follow the one-rank losses") {
  temp_dir d("gloo");
  const std::string common =
      " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32"
      " --set model.n_positions=32 --set train.seq_len=32 --set train.steps=20"
      " --set schedule.warmup=4 --set optimizer.lr=3e-3 --set eval.every=10"
      " --set eval.batches=2 --set checkpoint.every=10 --set train.sample_tokens=0"
      " --set train.threads=1 --set data.data_dir=" ZF_DATA_DIR;
  auto losses = [](const std::filesystem::path& metrics) {
    std::vector<double> v;
    std::ifstream in(metrics);
    std::string line;
    while (std::getline(in, line)) {
      auto p = line.find("\"loss\":");
      v.push_back(std::stod(line.substr(p + 7)));
    }
    return v;
  };
  auto one = zf::testing::zeroflow(
      "train --set train.batch_size=4" + common + " --out " + (d.path / "one").string(), d.path);
  REQUIRE(one.code == 0);
  for (int stage : {0, 3}) {
    CAPTURE(stage);
    auto out = d.path / ("two" + std::to_string(stage));
    auto two = zf::testing::zeroflow("launch --nproc 2 -- train --set train.batch_size=2" + common +
                                         " --set zero.stage=" + std::to_string(stage) + " --out " +
                                         out.string(),
                                     d.path);
    INFO(two.out);
    REQUIRE(two.code == 0);
    CHECK(two.out.find("2 rank(s) (processes, gloo)") != std::string::npos);
    auto a = losses(d.path / "one" / "metrics.jsonl"), b = losses(out / "metrics.jsonl");
    REQUIRE(a.size() == 20);
    REQUIRE(b.size() == 20);
    for (int s = 0; s < 20; ++s) {
      CAPTURE(s);
      CHECK(std::abs(a[s] - b[s]) <= 1e-5 * a[s]);
    }
    CHECK(std::filesystem::exists(out / "checkpoints" / "step-000020"));
    // each process wrote its own bytes; the committed checkpoint verifies and records the layout
    auto v = zf::testing::zeroflow("ckpt verify " + out.string(), d.path);
    CHECK(v.code == 0);
    auto info = zf::testing::zeroflow("ckpt info " + out.string(), d.path);
    CHECK(info.out.find("ZeRO stage " + std::to_string(stage)) != std::string::npos);
  }
}

namespace {
// pid of the process whose environment holds every one of `needles` (or 0)
int find_process(const std::vector<std::string>& needles) {
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string env = zf::testing::slurp(e.path() / "environ");
    for (auto& c : env)
      if (c == '\0') c = '\n';
    env = "\n" + env;
    bool all = true;
    for (auto& n : needles) all = all && env.find("\n" + n + "\n") != std::string::npos;
    if (all) return std::stoi(name);
  }
  return 0;
}
}  // namespace

TEST_CASE("zero train: a rank killed mid-run stops the launch with a message naming it") {
  temp_dir d("gloo-dead");
  // A port free now (a random one could be taken by another test's listener: the run then never
  // starts and the kill finds nothing to kill).
  const int port = zf::free_loopback_port();
  auto log = d.path / "log";
  struct reaper {  // whatever happens, leave no rank of this group running
    int port;
    ~reaper() {
      while (int p = find_process({"MASTER_PORT=" + std::to_string(port)})) ::kill(p, SIGKILL);
    }
  } reap{port};
  // ( ... ) & : the whole list runs in the background and system() returns at once
  std::string cmd = "(" + std::string(ZF_BINARY_DIR) + "/zeroflow launch --nproc 2 --master-port " +
                    std::to_string(port) +
                    " -- train --set train.steps=3000 --set model.n_layer=2 --set model.n_head=2"
                    " --set model.n_embd=32 --set model.n_positions=32 --set train.seq_len=32"
                    " --set train.batch_size=2 --set train.threads=1 --set eval.every=0"
                    " --set data.data_dir=" ZF_DATA_DIR " --out " +
                    (d.path / "run").string() + " > " + log.string() + " 2>&1; echo $? > " +
                    (d.path / "rc").string() + ") &";
  REQUIRE(std::system(cmd.c_str()) == 0);
  int pid = 0;
  for (int i = 0; i < 600 && !pid; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pid = find_process({"RANK=1", "MASTER_PORT=" + std::to_string(port)});
  }
  REQUIRE(pid > 0);
  // let it train (under any machine load) before the kill
  for (int i = 0; i < 1200 && zf::testing::slurp(log).find("step 10/") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 1200 && !std::filesystem::exists(d.path / "rc"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(std::filesystem::exists(d.path / "rc"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto out = zf::testing::slurp(log);
  INFO(out);
  CHECK(std::stoi(zf::testing::slurp(d.path / "rc")) != 0);
  CHECK(out.find("rank 1 was killed by signal") != std::string::npos);
  // and no rank is left behind
  CHECK(find_process({"MASTER_PORT=" + std::to_string(port)}) == 0);
}
