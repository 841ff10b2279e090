// `zeroflow train` is a graph (examples/graphs/train.toml, built in): the train stage's metrics
// and notes are messages any stage can consume. Here a recording stage takes the place of the
// progress line: it must see every step, in order, with the figures metrics.jsonl records, the
// note of an early stop, and then the result.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/stages_train.hpp"
#include "test_util.hpp"

using namespace zf;

namespace {

struct recording : stage {
  in_port<step_metrics> metrics = input<step_metrics>("metrics");
  in_port<train_note> notes = input<train_note>("notes", false);
  in_port<train_result> result = input<train_result>("result");
  std::vector<step_metrics> seen;
  std::vector<std::string> noted;
  int results = 0, metrics_after_result = 0;
  void start(stage_context& ctx) override {
    ctx.on(metrics, [this](const std::shared_ptr<const step_metrics>& m) {
      seen.push_back(*m);
      metrics_after_result += results;
    });
    ctx.on(notes, [this](const std::shared_ptr<const train_note>& n) { noted.push_back(n->text); });
    ctx.on(result, [this](const std::shared_ptr<const train_result>&) { ++results; });
  }
};

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("train graph: the built-in graph is examples/graphs/train.toml and checks") {
  CHECK(default_train_graph() == read_all(ZF_SOURCE_DIR "/examples/graphs/train.toml"));
  graph g = build_graph(default_train_graph(), "train.toml", run_config{}, builtin_stages());
  const std::string d = describe(g);
  CHECK(d.find("train.metrics -> monitor.metrics") != std::string::npos);
  CHECK(d.find("train.notes -> monitor.notes") != std::string::npos);
  CHECK(d.find("train.result -> report.result") != std::string::npos);
}

TEST_CASE("train graph: every step's metrics reach a connected stage, as metrics.jsonl has them") {
  testing::temp_dir d("train_graph");
  run_config cfg;
  cfg.model.n_layer = 1, cfg.model.n_head = 2, cfg.model.n_embd = 32, cfg.model.n_positions = 32;
  cfg.train.steps = 8, cfg.train.batch_size = 2, cfg.train.seq_len = 32, cfg.schedule.warmup = 2;
  cfg.eval.every = 3, cfg.eval.batches = 1, cfg.train.sample_tokens = 0, cfg.train.threads = 1;
  cfg.checkpoint.every = 0;
  cfg.data.data_dir = ZF_DATA_DIR;
  run_options o;
  o.out = d.path / "run";
  o.stop_at_step = 5;  // an early stop: a note, then the result
  o.print_sample = false;
  graph g;
  auto& train = g.add<stages::train_stage>("train", cfg, o);
  auto& rec = g.add<recording>("rec");
  g.connect(train.metrics, rec.metrics);
  g.connect(train.notes, rec.notes);
  g.connect(train.result, rec.result);
  run_graph(g);

  REQUIRE(rec.seen.size() == 5);
  std::ifstream in(o.out / "metrics.jsonl");
  std::string line;
  for (int s = 0; s < 5; ++s) {
    CAPTURE(s);
    REQUIRE(std::getline(in, line));
    const auto j = nlohmann::json::parse(line);
    CHECK(rec.seen[s].step == s + 1);
    CHECK(rec.seen[s].total_steps == 8);
    CHECK(rec.seen[s].loss == j["loss"].get<double>());
    CHECK(rec.seen[s].lr == j["lr"].get<double>());
    CHECK((rec.seen[s].val_loss >= 0) == (s + 1 == 3));  // evaluated at step 3 only
  }
  CHECK(rec.results == 1);
  CHECK(rec.metrics_after_result == 0);
  REQUIRE(rec.noted.size() >= 1);
  CHECK(rec.noted.back().find("interrupted: stopped after step 5") != std::string::npos);
}
