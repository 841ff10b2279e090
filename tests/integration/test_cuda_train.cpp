// train.device = cuda end to end through the actors (issue 17): the rank's model, gradients and
// AdamW state in GPU memory, checkpoints copied through the host. Run on the CPU simulation of
// CUDA (every build has it), against the cpu run of the same config; on a machine with a GPU the
// same pipeline runs on it (scripts/gpu-check).
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "integration/helpers.hpp"
#include "integration/quiet_run.hpp"
#include "kernels/dispatch.hpp"
#include "pipelines/pipeline.hpp"
#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using zf::testing::quiet_opts;
using zf::testing::small_config;
using zf::testing::temp_dir;

namespace {

run_config cuda_config() {
  run_config c = small_config();
  c.train.steps = 6;
  c.checkpoint.every = 3;
  c.eval.every = 3;        // the evaluation forward runs on the device too
  c.train.batch_size = 2;  // the simulation runs GPT-2's 50257-wide head slowly
  c.train.seq_len = 16;
  return c;
}

std::string refusal(const run_config& c, const std::filesystem::path& out) {
  try {
    zf::testing::quiet_pretrain(c).run(quiet_opts(out));
  } catch (const zf::error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("train: train.device = cuda (simulated) follows the cpu run and resumes exactly") {
  const kernels::cuda_simulation_scope sim;
  temp_dir d("cuda-train");
  run_config c = cuda_config();
  const auto cpu = zf::testing::quiet_pretrain(c).run(quiet_opts(d.path / "cpu"));
  c.train.device = "cuda";
  const auto gpu = zf::testing::quiet_pretrain(c).run(quiet_opts(d.path / "cuda"));
  REQUIRE(cpu.losses.size() == 6);
  REQUIRE(gpu.losses.size() == 6);
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);  // the twins sum in other orders: close, not bitwise
    CHECK(std::fabs(gpu.losses[i] - cpu.losses[i]) <= 1e-4 * cpu.losses[i]);
  }
  CHECK(gpu.losses.back() < gpu.losses.front());

  // The checkpoint came back through the host: the cpu run's weights and moments, closely.
  const auto layout = layout_of(c.model);
  const auto a = storage::load_checkpoint(d.path / "cpu", layout);
  const auto b = storage::load_checkpoint(d.path / "cuda", layout);
  REQUIRE(b.step == 6);
  REQUIRE(b.params.size() == a.params.size());
  double diff = 0, norm = 0, mdiff = 0, mnorm = 0;
  for (std::size_t i = 0; i < a.params.size(); ++i) {
    diff += std::pow(double(b.params[i]) - a.params[i], 2);
    norm += std::pow(double(a.params[i]), 2);
    mdiff += std::pow(double(b.exp_avg[i]) - a.exp_avg[i], 2);
    mnorm += std::pow(double(a.exp_avg[i]), 2);
  }
  CHECK(std::sqrt(diff / norm) < 1e-5);
  CHECK(std::sqrt(mdiff / mnorm) < 1e-3);

  // Stopped at step 3 and resumed from its checkpoint: the uninterrupted cuda run's losses.
  auto o = quiet_opts(d.path / "split");
  o.stop_at_step = 3;
  const auto first = zf::testing::quiet_pretrain(c).run(o);
  REQUIRE(first.final_step == 3);
  o.stop_at_step = 0;
  o.resume = "latest";
  const auto second = zf::testing::quiet_pretrain(c).run(o);
  REQUIRE(second.losses.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(first.losses[std::size_t(i)] == gpu.losses[std::size_t(i)]);
    CHECK(second.losses[std::size_t(i)] == gpu.losses[std::size_t(i) + 3]);
  }
}

TEST_CASE("train: train.device = cuda is refused by name where it cannot run") {
  temp_dir d("cuda-refused");
  run_config c = cuda_config();
  c.train.device = "cuda";
  c.train.ranks = 2;
  CHECK(refusal(c, d.path / "a").find("train.ranks: train.device = cuda runs one rank") !=
        std::string::npos);
  c.train.ranks = 1;
  c.zero.stage = 2;
  CHECK(refusal(c, d.path / "b").find("zero.stage: train.device = cuda runs zero.stage 0") !=
        std::string::npos);
  c.zero.stage = 0;
  const kernels::cuda_simulation_scope real(false);
  if (kernels::cuda_built() && kernels::cuda_device_count() > 0) {
    MESSAGE("SKIPPED the no-GPU refusal: this process has a GPU");
    return;
  }
  const std::string m = refusal(c, d.path / "c");
  CHECK(m.find("train.device = cuda: ") != std::string::npos);
  CHECK(m.find(kernels::cuda_built() ? "sees no CUDA device" : "built without CUDA") !=
        std::string::npos);
  CHECK_FALSE(std::filesystem::exists(d.path / "c" / "metrics.jsonl"));  // refused before a step
}
