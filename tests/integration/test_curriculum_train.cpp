// Data efficiency through the whole training stack (issue 13): a run with a seqlen curriculum, a
// vocab_rarity pool curriculum and random-LTD follows its schedule (metrics.jsonl), ends by
// train.tokens, and resumes mid-curriculum bit for bit at every ZeRO stage.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "integration/helpers.hpp"
#include "pipelines/pipeline.hpp"
#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using zf::testing::small_config;
using zf::testing::temp_dir;

namespace {

run_config data_efficiency_config() {
  run_config c = small_config();
  c.model.n_layer = 3;
  c.train.steps = 12;
  c.train.batch_size = 2;  // per rank (2 ranks: a global batch of 4 rows)
  auto& s = c.data.curriculum.seqlen;
  s.enabled = true;
  s.min_difficulty = 8;
  s.max_difficulty = 32;
  s.total_steps = 8;
  s.difficulty_step = 8;
  auto& v = c.data.curriculum.vocab_rarity;
  v.enabled = true;
  v.difficulty_type = "percentile";
  v.min_difficulty = 20;
  v.max_difficulty = 100;
  v.total_steps = 10;
  v.difficulty_step = 10;
  c.train.random_ltd.enabled = true;  // the middle layer
  c.train.random_ltd.min_tokens = 4;
  c.train.random_ltd.total_steps = 10;
  c.train.random_ltd.step_size = 4;
  return c;
}

train_result run(const run_config& c, int stage, const std::filesystem::path& out,
                 const std::string& resume = "", int stop_at = 0) {
  pipeline p(c);
  p.add(stages::sampler{})
      .add(stages::train{.ranks = 2, .zero_stage = stage})
      .add(stages::checkpoint{})
      .add(stages::monitor{.quiet = true});
  run_options o;
  o.out = out;
  o.print_sample = false;
  o.resume = resume;
  o.stop_at_step = stop_at;
  return p.run(o);
}

std::vector<nlohmann::json> metrics_of(const std::filesystem::path& out) {
  std::ifstream in(out / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

}  // namespace

TEST_CASE("curriculum train: seqlen, rarity pool and random-LTD follow their schedules") {
  temp_dir d("curr-sched");
  const run_config c = data_efficiency_config();
  const auto r = run(c, 0, d.path / "run");
  REQUIRE(r.error.empty());
  const auto m = metrics_of(d.path / "run");
  REQUIRE(m.size() == 12);
  // seqlen: fixed_linear 8 -> 32 over 8 steps in multiples of 8: floor(s/8 * 24 + 8) rounded down
  const int seqlen[12] = {8, 8, 8, 16, 16, 16, 24, 24, 32, 32, 32, 32};
  // percentile: 20 + floor(s/10 * 80), multiples of 10
  const int pct[12] = {20, 20, 30, 40, 50, 60, 60, 70, 80, 90, 100, 100};
  int64_t tokens = 0, layer_tokens = 0;
  for (int s = 0; s < 12; ++s) {
    CAPTURE(s);
    CHECK(m[s]["seqlen"] == seqlen[s]);
    CHECK(m[s]["difficulty"] == pct[s]);
    CHECK(m[s]["difficulty_metric"] == "vocab_rarity");
    // random-LTD keeps 4 -> 32 over 10 steps in multiples of 4, never more than the sequence
    const int keep = std::min(seqlen[s], s >= 10 ? 32 : (4 + (28 * s) / 10) / 4 * 4);
    CHECK(m[s]["ltd_keep"] == keep);
    CHECK(m[s]["ltd_layers"] == 1);
    tokens += 4 * seqlen[s];                                   // 4 rows of seqlen tokens
    layer_tokens += 4 * (3 * seqlen[s] - (seqlen[s] - keep));  // one of 3 layers keeps `keep`
    CHECK(m[s]["tokens"] == tokens);
    CHECK(m[s]["layer_tokens"] == layer_tokens);
  }
}

TEST_CASE("curriculum train: a resume mid-curriculum equals the uninterrupted run at every stage") {
  temp_dir d("curr-resume");
  const run_config c = data_efficiency_config();
  const auto layout = layout_of(c.model);
  for (int stage : {0, 1, 2, 3}) {
    CAPTURE(stage);
    const auto tag = std::to_string(stage);
    auto full = run(c, stage, d.path / ("full" + tag));
    auto first = run(c, stage, d.path / ("split" + tag), "", 5);
    REQUIRE(first.final_step == 5);
    auto second = run(c, stage, d.path / ("split" + tag), "latest");
    REQUIRE(full.losses.size() == 12);
    REQUIRE(second.losses.size() == 7);
    for (int k = 0; k < 7; ++k) CHECK(second.losses[k] == full.losses[5 + k]);
    auto a = storage::load_checkpoint(d.path / ("full" + tag), layout);
    auto b = storage::load_checkpoint(d.path / ("split" + tag), layout);
    CHECK(a.params == b.params);
    CHECK(a.exp_avg_sq == b.exp_avg_sq);
    // the resumed run counted on from the checkpoint's tokens
    const auto mf = metrics_of(d.path / ("full" + tag)), ms = metrics_of(d.path / ("split" + tag));
    CHECK(ms.back()["tokens"] == mf.back()["tokens"]);
    CHECK(ms.back()["layer_tokens"] == mf.back()["layer_tokens"]);
  }
}

TEST_CASE("curriculum train: train.tokens ends the run at the step that reaches it") {
  temp_dir d("curr-tokens");
  run_config c = data_efficiency_config();
  c.train.steps = 100;                         // an upper bound
  c.train.tokens = 4 * (8 + 8 + 8 + 16 + 16);  // reached at the end of step 5
  c.schedule.decay_by = "tokens";
  const auto r = run(c, 0, d.path / "run");
  REQUIRE(r.error.empty());
  CHECK(r.final_step == 5);
  const auto m = metrics_of(d.path / "run");
  REQUIRE(m.size() == 5);
  CHECK(m.back()["tokens"] == c.train.tokens);
}

TEST_CASE("curriculum train: a stale or missing metric index is refused naming the key") {
  temp_dir d("curr-index");
  run_config c = data_efficiency_config();
  c.data.curriculum.vocab_rarity.enabled = false;
  c.data.curriculum.custom = c.data.curriculum.vocab_rarity;
  c.data.curriculum.custom.enabled = true;
  c.data.curriculum.custom.difficulty_type = "percentile";
  c.data.curriculum.custom.min_difficulty = 20;
  c.data.curriculum.custom.max_difficulty = 100;
  c.data.curriculum.custom.total_steps = 10;
  c.data.curriculum.custom.difficulty_step = 10;
  auto msg = zf::testing::error_of([&] { run(c, 0, d.path / "a"); });
  CHECK(msg.find("data.curriculum.custom.index: set it to the folder") != std::string::npos);
  c.data.curriculum.custom.index = (d.path / "nowhere").string();
  msg = zf::testing::error_of([&] { run(c, 0, d.path / "b"); });
  CHECK(msg.find("data.curriculum.custom.index: ") == 0);
  CHECK(msg.find("nowhere") != std::string::npos);
}
