// The RLHF roles run at train.precision (issue 16): bf16 GEMMs with fp32 master weights, as the
// training pipeline; fp16, which would need a loss scaler in the RL steps, is refused by name.
#include <doctest/doctest.h>

#include <cmath>

#include "rlhf_helpers.hpp"

using namespace zf;
using namespace zf::testing;

TEST_CASE("rlhf precision: bf16 SFT follows the fp32 losses within bf16 rounding, fp16 refused") {
  temp_dir d("rlhf_precision");
  auto sft = [&](const std::string& precision) {
    rl_run_options o;
    o.out = (d / precision).string();
    o.quiet = true;
    return run_sft(rlhf_config_with({"train.precision=" + precision, "rlhf.sft_steps=30"}), o);
  };
  const sft_run_result f32 = sft("fp32"), bf16 = sft("bf16");
  MESSAGE("sft loss fp32 " << f32.loss_first << " -> " << f32.loss_last << ", bf16 "
                           << bf16.loss_first << " -> " << bf16.loss_last);
  CHECK(bf16.loss_first != f32.loss_first);  // the GEMMs did round: not the fp32 run
  CHECK(std::abs(bf16.loss_first - f32.loss_first) < 1e-2 * f32.loss_first);
  CHECK(std::abs(bf16.loss_last - f32.loss_last) < 5e-2 * f32.loss_last);
  CHECK(std::abs(bf16.heldout_loss - f32.heldout_loss) < 5e-2 * f32.heldout_loss);
  CHECK(bf16.loss_last < 0.8 * bf16.loss_first);

  rl_run_options o;
  o.out = (d / "fp16").string();
  o.quiet = true;
  const std::string msg = error_of([&] { run_sft(rlhf_config_with({"train.precision=fp16"}), o); });
  CHECK(msg.find("train.precision") != std::string::npos);
  CHECK(msg.find("bf16") != std::string::npos);
}
