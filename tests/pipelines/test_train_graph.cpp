// `zeroflow train` is a graph (examples/graphs/train.toml, built in): the train stage's metrics
// and notes are messages any stage can consume. Here a recording stage takes the place of the
// progress line: it must see every step, in order, with the figures metrics.jsonl records, the
// note of an early stop, and then the result.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/stages_train.hpp"
#include "runtime/monitor/run_status.hpp"
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
  // run.json: an early stop is an interrupted run (resumable), of the run's 8 steps
  const auto st = monitor::read_run_status(o.out);
  REQUIRE(st.has_value());
  CHECK(st->state == monitor::run_state::interrupted);
  CHECK(st->message == "stopped after step 5");
  CHECK(st->kind == "train");
  CHECK(st->total_steps == 8);
}

namespace {

struct span_row {
  std::string actor, what;
  double t0, t1;
};

// spans.jsonl: its start line, then the spans in the order they were added.
std::vector<span_row> read_spans(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  REQUIRE(std::getline(in, line));
  CHECK(nlohmann::json::parse(line)["start_unix"].get<double>() > 1.7e9);
  std::vector<span_row> rows;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    rows.push_back({j["actor"], j["what"], j["t0"], j["t1"]});
  }
  return rows;
}

}  // namespace

TEST_CASE("train monitoring: run.json, every actor's spans and the stall figures of a run") {
  testing::temp_dir d("train_monitoring");
  run_config cfg;
  cfg.model.n_layer = 1, cfg.model.n_head = 2, cfg.model.n_embd = 32, cfg.model.n_positions = 32;
  cfg.train.steps = 6, cfg.train.batch_size = 2, cfg.train.seq_len = 32, cfg.schedule.warmup = 2;
  cfg.train.ranks = 2, cfg.train.sample_tokens = 0, cfg.train.threads = 1;
  cfg.eval.every = 3, cfg.eval.batches = 1, cfg.checkpoint.every = 2;
  cfg.data.data_dir = ZF_DATA_DIR;
  pipeline p(cfg);
  p.add(stages::sampler{})
      .add(stages::train{})
      .add(stages::checkpoint{})
      .add(stages::monitor{.quiet = true});
  run_options o;
  o.out = d.path / "run";
  o.print_sample = false;
  const auto r = p.run(o);
  REQUIRE(r.final_step == 6);

  const auto st = monitor::read_run_status(o.out);
  REQUIRE(st.has_value());
  CHECK(st->state == monitor::run_state::finished);
  CHECK(st->kind == "train");
  CHECK(st->total_steps == 6);
  CHECK(st->message.empty());
  CHECK(st->end_unix >= st->start_unix);
  CHECK(st->config == read_all((o.out / "config.toml").string()));

  // Each actor's spans: in time order, one thing at a time, as many as the run's messages.
  std::map<std::string, int> count;
  std::map<std::string, double> last_end;
  std::vector<double> write_ms;  // checkpoint_writer's write spans, in order
  for (const auto& s : read_spans(o.out / "spans.jsonl")) {
    const std::string key = s.actor + "/" + s.what;
    CAPTURE(key);
    CHECK(s.t0 >= 0);
    CHECK(s.t1 >= s.t0);
    CHECK(s.t0 >= last_end[s.actor]);
    last_end[s.actor] = s.t1;
    ++count[key];
    if (key == "checkpoint_writer/write") write_ms.push_back((s.t1 - s.t0) * 1000);
  }
  for (const std::string rank : {"0", "1"}) {
    CAPTURE(rank);
    CHECK(count["rank" + rank + "/forward_backward"] == 6);  // one micro-batch per step
    CHECK(count["rank" + rank + "/reduce"] == 6);
    CHECK(count["rank" + rank + "/evaluate"] == 2);  // steps 3 and 6, one batch each
    CHECK(count["optimizer" + rank + "/step"] == 6);
    CHECK(count["optimizer" + rank + "/grad_norm"] == 6);
    CHECK(count["optimizer" + rank + "/snapshot"] == 3);  // checkpoints at 2, 4, 6
  }
  CHECK(count["sampler/batch"] >= 12);  // 6 steps x 2 ranks, and what prefetch asked ahead
  CHECK(count["sampler/val_batch"] == 4);
  CHECK(count["checkpoint_writer/write"] == 3);
  CHECK(count.size() == 15);  // nothing else
  REQUIRE(write_ms.size() == 3);

  // metrics.jsonl: every step's wait for data (part of its time); a finished write's duration
  // on the step it finished in, the same figure as its span (printed to the microsecond).
  std::ifstream in(o.out / "metrics.jsonl");
  std::string line;
  std::vector<double> reported;
  int lines = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    CAPTURE(line);
    ++lines;
    REQUIRE(j.contains("data_wait_ms"));
    CHECK(j["data_wait_ms"].get<double>() >= 0);
    CHECK(j["data_wait_ms"].get<double>() <= j["step_ms"].get<double>());
    if (!j.contains("ckpt_write_ms")) continue;
    // the write of step 2 finishes in step 3, 4 or (waited for by checkpoint 4) 5; step 4's may
    // finish in 5 or 6; step 6's finishes after the last metrics
    const int step = j["step"];
    CHECK(step >= 3);
    reported.push_back(j["ckpt_write_ms"].get<double>());
  }
  CHECK(lines == 6);
  REQUIRE(reported.size() >= 1);
  REQUIRE(reported.size() <= 2);
  for (std::size_t i = 0; i < reported.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(reported[i] - write_ms[i]) <= 2e-3);
  }
}
