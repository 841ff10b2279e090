// `monitor.tensorboard = true`: a training run also writes a TensorBoard event file in its run
// folder, with every step's scalars as metrics.jsonl has them. Read back with the tests' own
// reader (tests/runtime/tfrecord_reader.hpp: CRCs, framing and protobuf checked independently of
// the writer) and compared, step by step and key by key, with metrics.jsonl.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "../runtime/tfrecord_reader.hpp"
#include "pipelines/pipeline.hpp"
#include "test_util.hpp"

using namespace zf;
namespace tb = zf::testing::tfrecord;

namespace {

run_config tiny_config(int steps) {  // as test_train_graph.cpp's runs
  run_config cfg;
  cfg.model.n_layer = 1, cfg.model.n_head = 2, cfg.model.n_embd = 32, cfg.model.n_positions = 32;
  cfg.train.steps = steps, cfg.train.batch_size = 2, cfg.train.seq_len = 32;
  cfg.schedule.warmup = 2, cfg.train.sample_tokens = 0, cfg.train.threads = 1;
  cfg.eval.every = 3, cfg.eval.batches = 1, cfg.checkpoint.every = 2;
  cfg.data.data_dir = ZF_DATA_DIR;
  return cfg;
}

train_result train(const run_config& cfg, const std::filesystem::path& out) {
  pipeline p(cfg);
  p.add(stages::sampler{})
      .add(stages::train{})
      .add(stages::checkpoint{})
      .add(stages::monitor{.quiet = true});
  run_options o;
  o.out = out;
  o.print_sample = false;
  return p.run(o);
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

TEST_CASE("train tensorboard: the event file has metrics.jsonl's scalars, step by step") {
  testing::temp_dir d("train_tensorboard");
  run_config cfg = tiny_config(6);
  cfg.monitor.tensorboard = true;
  // the data-efficiency figures too: a seqlen curriculum and random-LTD in the one layer
  cfg.data.curriculum.seqlen.enabled = true;
  cfg.data.curriculum.seqlen.min_difficulty = 16;
  cfg.data.curriculum.seqlen.total_steps = 4;
  cfg.data.curriculum.seqlen.difficulty_step = 8;
  cfg.train.random_ltd.enabled = true;
  cfg.train.random_ltd.layers = {0};
  cfg.train.random_ltd.min_tokens = 8;
  cfg.train.random_ltd.step_size = 8;
  const double t0 = unix_now();
  REQUIRE(train(cfg, d.path / "run").final_step == 6);
  const double t1 = unix_now();

  const auto files = tb::event_files(d.path / "run");
  REQUIRE(files.size() == 1);
  const auto got = tb::read_events(tb::slurp_binary(files[0]));
  REQUIRE(got.error == "");
  REQUIRE(got.events.size() > 1);
  CHECK(got.events[0].file_version == "brain.Event:2");
  // step -> tag -> value, each scalar event holding one value
  std::map<int64_t, std::map<std::string, float>> scalars;
  for (std::size_t i = 1; i < got.events.size(); ++i) {
    const auto& e = got.events[i];
    CAPTURE(i);
    REQUIRE(e.values.size() == 1);
    CHECK(e.wall_time >= t0 - 1);
    CHECK(e.wall_time <= t1 + 1);
    CHECK(scalars[e.step].emplace(e.values[0].first, e.values[0].second).second);  // once each
  }

  // Every number of every metrics.jsonl line but step and ranks, as "train/<key>", at its step.
  std::ifstream in(d.path / "run" / "metrics.jsonl");
  std::string line;
  int lines = 0, with_val = 0, with_ckpt = 0, with_seqlen = 0, with_ltd = 0;
  while (std::getline(in, line)) {
    CAPTURE(line);
    const auto j = nlohmann::json::parse(line);
    const int64_t step = j["step"].get<int64_t>();
    ++lines;
    REQUIRE(scalars.count(step));
    const auto& at = scalars[step];
    std::set<std::string> want;
    for (auto& [k, v] : j.items()) {
      if (k == "step" || k == "ranks" || v.is_string()) continue;  // names are not scalars
      CAPTURE(k);
      want.insert("train/" + k);
      REQUIRE(at.count("train/" + k));
      CHECK(at.at("train/" + k) == static_cast<float>(v.get<double>()));
    }
    std::set<std::string> have;
    for (auto& [tag, v] : at) have.insert(tag);
    CHECK(have == want);  // nothing more, nothing less
    CHECK(at.count("train/loss"));
    with_val += at.count("train/val_loss");
    with_seqlen += at.count("train/seqlen");
    with_ltd += at.count("train/ltd_keep");
    with_ckpt += at.count("train/ckpt_write_ms");
  }
  CHECK(lines == 6);
  CHECK(scalars.size() == 6);
  CHECK(with_val == 2);  // steps 3 and 6
  CHECK(with_seqlen == 6);
  CHECK(with_ltd == 6);
  CHECK(with_ckpt >= 1);
}

TEST_CASE("train tensorboard: off by default, no event file") {
  testing::temp_dir d("train_no_tensorboard");
  REQUIRE(train(tiny_config(2), d.path / "run").final_step == 2);
  CHECK(std::filesystem::exists(d.path / "run" / "metrics.jsonl"));
  CHECK(tb::event_files(d.path / "run").empty());
}
