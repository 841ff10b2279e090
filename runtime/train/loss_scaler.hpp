#pragma once
// fp16 loss scaling (issue 16), DeepSpeed's DynamicLossScaler step for step: the loss (so every
// gradient) is multiplied by the scale before backward, so small fp16 gradients do not flush to
// zero; a step whose gradients overflowed (a non-finite global norm) is skipped, and the scale
// halves once `hysteresis` overflows have been seen; after `loss_scale_window` steps without one
// it doubles. bf16 and fp32 runs use a scaler that is off: scale 1, nothing skipped.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>

#include "kernels/gemm_lib.hpp"
#include "runtime/core/config.hpp"

namespace zf {

struct loss_scaler_state {
  double scale = 1;
  int hysteresis = 0;          // overflows left before the next halving
  int64_t iter = 0;            // steps seen
  int64_t last_overflow = -1;  // the iter of the last overflow
  int64_t skipped = 0;         // steps skipped so far
};

// train.precision as the kernels' compute precision.
kernels::precision precision_of(const train_config& t);
// The "loss_scaler" object of a checkpoint's state (written by train_loop), or null when there
// is none (an fp32 / bf16 checkpoint: an fp16 resume starts a fresh scaler).
std::shared_ptr<const loss_scaler_state> scaler_state_of(const nlohmann::json& state);

class loss_scaler {
 public:
  // enabled: fp16. c.loss_scale > 0 fixes the scale (overflowed steps are still skipped).
  loss_scaler(const fp16_config& c, bool enabled);
  bool enabled() const { return enabled_; }
  double scale() const { return s_.scale; }
  int64_t skipped() const { return s_.skipped; }
  // After a step's gradients: true when that step must be skipped (overflow), and the scale
  // moves. zf::error naming train.fp16.min_loss_scale when an overflow comes at the minimum.
  bool update(bool overflow);
  // For checkpoints: the whole state, and a resume from it.
  const loss_scaler_state& state() const { return s_; }
  void restore(const loss_scaler_state& s) { s_ = s; }

 private:
  fp16_config c_;
  bool enabled_, dynamic_;
  loss_scaler_state s_;
};

}  // namespace zf
