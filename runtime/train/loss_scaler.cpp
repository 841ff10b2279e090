#include "runtime/train/loss_scaler.hpp"

#include <algorithm>
#include <cmath>

#include "runtime/core/error.hpp"

namespace zf {

kernels::precision precision_of(const train_config& t) {
  if (t.precision == "bf16") return kernels::precision::bf16;
  if (t.precision == "fp16") return kernels::precision::f16;
  return kernels::precision::f32;
}

std::shared_ptr<const loss_scaler_state> scaler_state_of(const nlohmann::json& state) {
  if (!state.contains("loss_scaler")) return nullptr;
  const nlohmann::json& j = state["loss_scaler"];
  auto s = std::make_shared<loss_scaler_state>();
  try {
    s->scale = j.at("scale").get<double>();
    s->hysteresis = j.at("hysteresis").get<int>();
    s->iter = j.at("iter").get<int64_t>();
    s->last_overflow = j.at("last_overflow").get<int64_t>();
    s->skipped = j.at("skipped").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint state: loss_scaler is malformed ({})", e.what());
  }
  if (!(s->scale > 0) || !std::isfinite(s->scale))
    fail("checkpoint state: loss_scaler.scale must be a positive number, got {}", s->scale);
  return s;
}

loss_scaler::loss_scaler(const fp16_config& c, bool enabled)
    : c_(c), enabled_(enabled), dynamic_(enabled && c.loss_scale <= 0) {
  if (!enabled_) return;
  s_.scale = dynamic_ ? std::ldexp(1.0, c.initial_scale_power) : c.loss_scale;
  s_.hysteresis = c.hysteresis;
}

bool loss_scaler::update(bool overflow) {
  if (!enabled_) return false;
  if (overflow) {
    ++s_.skipped;
    if (dynamic_) {
      if (s_.hysteresis <= 1) {
        if (s_.scale <= c_.min_loss_scale)
          fail(
              "fp16: gradients overflow at the minimum loss scale {} (train.fp16.min_loss_scale)"
              "; the run diverged, or use train.precision = bf16",
              c_.min_loss_scale);
        s_.scale = std::max(s_.scale / 2, c_.min_loss_scale);
      } else {
        --s_.hysteresis;
      }
    }
    s_.last_overflow = s_.iter++;
    return true;
  }
  if (dynamic_) {
    const int64_t stable = s_.iter - s_.last_overflow - 1;
    if (stable > 0 && stable % c_.loss_scale_window == 0) {
      s_.hysteresis = c_.hysteresis;
      s_.scale *= 2;
    }
  }
  ++s_.iter;
  return false;
}

}  // namespace zf
