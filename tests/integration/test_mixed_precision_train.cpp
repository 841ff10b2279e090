// Mixed precision end to end (issue 16): bf16 follows the fp32 curve and checkpoints stay fp32
// (a bf16 run resumes in fp32 and back); fp16's loss scaler skips overflowing steps, lowers the
// scale, reports it and resumes it exactly.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "integration/helpers.hpp"
#include "integration/quiet_run.hpp"
#include "pipelines/pipeline.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using zf::testing::quiet_opts;
using zf::testing::small_config;
using zf::testing::temp_dir;

namespace {
train_result run_quiet(const run_config& c, const run_options& o) {
  return zf::testing::quiet_pretrain(c).run(o);
}
std::vector<nlohmann::json> metrics_of(const std::filesystem::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}
}  // namespace

TEST_CASE("train: bf16 follows the fp32 curve and resumes in fp32 and back") {
  temp_dir d("bf16");
  run_config c = small_config();
  const auto fp32 = run_quiet(c, quiet_opts(d.path / "fp32"));
  c.train.precision = "bf16";
  const auto bf16 = run_quiet(c, quiet_opts(d.path / "bf16"));
  REQUIRE(fp32.losses.size() == 20);
  REQUIRE(bf16.losses.size() == 20);
  double worst = 0;
  bool differs = false;
  for (int i = 0; i < 20; ++i) {
    worst = std::max(worst, std::fabs(double(bf16.losses[i]) - fp32.losses[i]) / fp32.losses[i]);
    differs |= bf16.losses[i] != fp32.losses[i];
  }
  CHECK(worst < 0.01);  // within 1% at every step
  CHECK(differs);       // and really computed in bf16
  CHECK(bf16.losses.back() < bf16.losses.front() - 0.5f);
  // No loss_scale in a bf16 run's metrics (fp16 only).
  CHECK_FALSE(metrics_of(d.path / "bf16").front().contains("loss_scale"));

  // bf16 for 10 steps, then fp32: the checkpoint holds fp32 master weights and moments.
  auto o = quiet_opts(d.path / "switch");
  o.stop_at_step = 10;
  const auto first = run_quiet(c, o);
  REQUIRE(first.final_step == 10);
  for (int i = 0; i < 10; ++i) CHECK(first.losses[i] == bf16.losses[i]);
  c.train.precision = "fp32";
  o.stop_at_step = 15;
  o.resume = "latest";
  const auto second = run_quiet(c, o);
  REQUIRE(second.first_step == 10);
  REQUIRE(second.losses.size() == 5);
  c.train.precision = "bf16";  // and back
  o.stop_at_step = 0;
  const auto third = run_quiet(c, o);
  REQUIRE(third.losses.size() == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(std::fabs(second.losses[i] - bf16.losses[10 + i]) < 0.01 * bf16.losses[10 + i]);
    CHECK(std::fabs(third.losses[i] - bf16.losses[15 + i]) < 0.01 * bf16.losses[15 + i]);
  }
}

TEST_CASE("train: fp16 skips overflowing steps, lowers the scale and resumes it exactly") {
  temp_dir d("fp16");
  run_config c = small_config();
  c.train.precision = "fp16";
  c.train.steps = 24;
  c.train.fp16.initial_scale_power = 26;  // 2^26: the head's gradient overflows f16 at once
  c.train.fp16.hysteresis = 1;
  c.train.fp16.loss_scale_window = 6;
  const auto full = run_quiet(c, quiet_opts(d.path / "full"));
  REQUIRE(full.losses.size() == 24);
  const auto m = metrics_of(d.path / "full");
  REQUIRE(m.size() == 24);
  CHECK(m[0]["skipped"].get<bool>());
  CHECK(m[0]["loss_scale"].get<double>() == std::ldexp(1.0, 25));
  int skipped = 0, grew = 0;
  double prev = std::ldexp(1.0, 26);
  for (const auto& j : m) {
    CAPTURE(j.dump());
    const double s = j["loss_scale"].get<double>();
    if (j["skipped"].get<bool>()) {
      ++skipped;
      CHECK(s == prev / 2);  // hysteresis 1: every overflow halves
    } else {
      CHECK((s == prev || s == prev * 2));
      grew += s == prev * 2;
    }
    CHECK(j["skipped_steps"].get<int>() == skipped);
    prev = s;
  }
  CHECK(skipped >= 1);
  CHECK(skipped < 12);
  CHECK(grew >= 1);  // 6 clean steps double it
  CHECK(full.losses.back() < full.losses.front() - 0.5f);

  // Stopped at 12 and resumed: the scaler's state comes back with the checkpoint, so the rest is
  // the same run bit for bit.
  auto o = quiet_opts(d.path / "split");
  o.stop_at_step = 12;
  run_quiet(c, o);
  o.stop_at_step = 0;
  o.resume = "latest";
  const auto second = run_quiet(c, o);
  REQUIRE(second.losses.size() == 12);
  for (int i = 0; i < 12; ++i) CHECK(second.losses[i] == full.losses[12 + i]);
  const auto m2 = metrics_of(d.path / "split");
  REQUIRE(m2.size() == 24);
  CHECK(m2.back()["loss_scale"] == m.back()["loss_scale"]);
  CHECK(m2.back()["skipped_steps"] == m.back()["skipped_steps"]);
}

TEST_CASE("train: a bad precision or loss-scale key is refused naming it") {
  run_config c = small_config();
  CHECK_THROWS_WITH(load_config("", {"train.precision=fp8"}), doctest::Contains("train.precision"));
  CHECK_THROWS_WITH(load_config("", {"train.fp16.hysteresis=0"}),
                    doctest::Contains("train.fp16.hysteresis"));
  CHECK(load_config("", {"train.precision=bf16"}).train.precision == "bf16");
}

TEST_CASE("train: bf16 and fp16 over 2 thread ranks at ZeRO 2 and 3 follow one rank") {
  temp_dir d("mp_zero");
  for (const char* prec : {"bf16", "fp16"}) {
    run_config one = small_config();
    one.train.precision = prec;
    one.train.steps = 8;
    const auto ref = run_quiet(one, quiet_opts(d.path / (std::string(prec) + "-1")));
    for (int stage : {2, 3}) {
      CAPTURE(prec);
      CAPTURE(stage);
      run_config two = one;
      two.train.ranks = 2;
      two.train.batch_size = one.train.batch_size / 2;
      two.zero.stage = stage;
      const auto got =
          run_quiet(two, quiet_opts(d.path / (std::string(prec) + "-z" + std::to_string(stage))));
      REQUIRE(got.losses.size() == ref.losses.size());
      for (std::size_t i = 0; i < ref.losses.size(); ++i)
        CHECK(got.losses[i] == doctest::Approx(ref.losses[i]).epsilon(1e-4));
    }
  }
}

TEST_CASE("train: gradients reduced in bf16 over 2 thread ranks follow fp32 reduction") {
  temp_dir d("mp_reduce");
  CHECK_THROWS_WITH(load_config("", {"train.reduce_dtype=fp8"}),
                    doctest::Contains("train.reduce_dtype"));
  for (int stage : {0, 1, 2, 3}) {
    CAPTURE(stage);
    run_config c = small_config();
    c.train.steps = 8;
    c.train.ranks = 2;
    c.train.batch_size /= 2;
    c.zero.stage = stage;
    const auto fp32 = run_quiet(c, quiet_opts(d.path / ("f" + std::to_string(stage))));
    c.train.reduce_dtype = "bf16";
    const auto bf16 = run_quiet(c, quiet_opts(d.path / ("b" + std::to_string(stage))));
    REQUIRE(bf16.losses.size() == fp32.losses.size());
    bool differs = false;
    for (std::size_t i = 0; i < fp32.losses.size(); ++i) {
      CHECK(bf16.losses[i] == doctest::Approx(fp32.losses[i]).epsilon(1e-2));
      differs |= bf16.losses[i] != fp32.losses[i];
    }
    CHECK(differs);  // the reduction really rounded (the first step's loss is the same)
    CHECK(bf16.losses.back() < bf16.losses.front());
  }
}
