// The training pipeline end to end through the actors: learning, exact resume, the DSL.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "integration/helpers.hpp"
#include "integration/quiet_run.hpp"
#include "pipelines/pipeline.hpp"
#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using zf::testing::small_config;
using zf::testing::temp_dir;

using zf::testing::quiet_opts;
using zf::testing::quiet_pretrain;

TEST_CASE("train: resume is exact, bit for bit") {
  temp_dir d("resume");
  run_config c = small_config();
  auto full = quiet_pretrain(c).run(quiet_opts(d.path / "full"));
  REQUIRE(full.losses.size() == 20);

  auto o = quiet_opts(d.path / "split");
  o.stop_at_step = 10;
  auto first = quiet_pretrain(c).run(o);
  CHECK(first.interrupted);
  REQUIRE(first.final_step == 10);
  REQUIRE(first.losses.size() == 10);
  o.stop_at_step = 0;
  o.resume = "latest";
  auto second = quiet_pretrain(c).run(o);
  CHECK(second.first_step == 10);
  REQUIRE(second.losses.size() == 10);
  for (int i = 0; i < 10; ++i) {
    CAPTURE(i);
    CHECK(first.losses[i] == full.losses[i]);        // exact, not approximate
    CHECK(second.losses[i] == full.losses[10 + i]);  // exact after the resume
  }
  // both runs end with identical weights
  auto layout = layout_of(c.model);
  auto a = storage::load_checkpoint(d.path / "full", layout);
  auto b = storage::load_checkpoint(d.path / "split", layout);
  CHECK(a.step == 20);
  CHECK(b.step == 20);
  REQUIRE(!a.exp_avg.empty());
  CHECK(a.params == b.params);
  CHECK(a.exp_avg == b.exp_avg);  // AdamW's first moment resumes exactly too
  CHECK(a.exp_avg_sq == b.exp_avg_sq);
}

TEST_CASE("train: train.data_seed orders the batches alone, train.seed the initial weights") {
  temp_dir d("data-seed");
  run_config c = small_config();
  c.train.steps = 3;
  c.checkpoint.every = 3;
  c.optimizer.lr = 1e-12;  // the matrices stay their initialisation (steps below half an ulp)
  auto run = [&](int64_t seed, int64_t data_seed, const char* name) {
    run_config r = c;
    r.train.seed = seed;
    r.train.data_seed = data_seed;
    auto res = quiet_pretrain(r).run(quiet_opts(d.path / name));
    REQUIRE(res.losses.size() == 3);
    const auto layout = layout_of(r.model);
    auto ck = storage::load_checkpoint(d.path / name, layout);
    std::vector<float> matrices;  // zero-initialised biases do move (by about 1e-12)
    for (auto& p : layout.params)
      if (p.shape.size() == 2)
        matrices.insert(matrices.end(), ck.params.begin() + p.offset,
                        ck.params.begin() + p.offset + p.numel);
    return std::pair{res.losses, matrices};
  };
  const auto a = run(5, -1, "a");  // -1: the batches follow train.seed
  const auto b = run(5, 5, "b");
  const auto c6 = run(5, 6, "c");
  const auto d6 = run(6, 5, "d");
  CHECK(a.first == b.first);  // data_seed = seed: the same batches
  auto diff = [](const std::vector<float>& x, const std::vector<float>& y) {
    double m = 0;
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
      m = std::max(m, double(std::abs(x[i] - y[i])));
    return m;
  };
  CHECK(diff(a.second, c6.second) < 1e-10);  // another data_seed: the same initial weights ...
  CHECK(a.first != c6.first);                // ... on other batches
  CHECK(diff(a.second, d6.second) > 1e-3);   // another seed: other weights
}

TEST_CASE("train: validation loss falls well below its start and metrics are written") {
  temp_dir d("learn");
  run_config c = small_config();
  c.model.n_embd = 64;
  c.model.n_positions = 64;
  c.train.seq_len = 64;
  c.train.batch_size = 8;
  c.train.steps = 60;
  c.optimizer.lr = 1e-2;
  c.schedule.warmup = 5;
  c.eval.every = 20;
  c.eval.batches = 4;
  c.train.threads = 0;
  auto r = quiet_pretrain(c).run(quiet_opts(d.path));
  REQUIRE(r.val_losses.size() == 3);
  // at initialisation the loss is about ln(50257) = 10.8
  CHECK(r.losses.front() > 10.0f);
  CHECK(r.val_losses.back().second < r.losses.front() - 3.0f);
  CHECK(r.val_losses.back().second < r.val_losses.front().second);
  // metrics.jsonl: one line per step with the keys later tools rely on
  std::ifstream in(d.path / "metrics.jsonl");
  std::string line;
  int lines = 0, with_val = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"step", "loss", "lr", "tokens_per_s"}) CHECK(j.contains(k));
    with_val += j.contains("val_loss");
    ++lines;
  }
  CHECK(lines == 60);
  CHECK(with_val == 3);
  CHECK(std::filesystem::exists(d.path / "checkpoints" / "latest"));
  CHECK(std::filesystem::exists(d.path / "config.toml"));
}

TEST_CASE("train: a pipeline without a train stage is refused with a clear message") {
  pipeline p(small_config());
  p.add(stages::sampler{});
  CHECK_THROWS_WITH_AS(p.run(run_options{}), doctest::Contains("no train stage"), zf::error);
}

TEST_CASE("train: an existing run folder is not overwritten without --resume") {
  temp_dir d("exists");
  run_config c = small_config();
  c.train.steps = 5;
  quiet_pretrain(c).run(quiet_opts(d.path));
  auto before = zf::testing::slurp(d.path / "checkpoints" / "latest");
  auto metrics_before = zf::testing::slurp(d.path / "metrics.jsonl");
  CHECK_THROWS_WITH_AS(quiet_pretrain(c).run(quiet_opts(d.path)),
                       doctest::Contains("--resume latest"), zf::error);
  CHECK(zf::testing::slurp(d.path / "checkpoints" / "latest") == before);
  CHECK(zf::testing::slurp(d.path / "metrics.jsonl") == metrics_before);
}
