// fp16 loss scaling (runtime/train/loss_scaler) step for step as DeepSpeed's DynamicLossScaler.
#include <doctest/doctest.h>

#include "runtime/core/error.hpp"
#include "runtime/train/loss_scaler.hpp"

using namespace zf;

TEST_CASE("loss scaler: hysteresis, halving, growth after a clean window, as DeepSpeed") {
  fp16_config c;
  c.initial_scale_power = 16;
  c.hysteresis = 2;
  c.loss_scale_window = 3;
  loss_scaler s(c, true);
  CHECK(s.scale() == 65536);
  CHECK(s.update(true));  // first overflow: hysteresis 2 -> 1, scale kept
  CHECK(s.scale() == 65536);
  CHECK(s.update(true));  // second: halves
  CHECK(s.scale() == 32768);
  CHECK(s.update(true));  // hysteresis stays spent: halves again
  CHECK(s.scale() == 16384);
  // iter 3..: stable interval = iter - last_overflow(2) - 1; doubles when it reaches 3
  CHECK_FALSE(s.update(false));  // iter 3, stable 0
  CHECK_FALSE(s.update(false));  // 4: 1
  CHECK_FALSE(s.update(false));  // 5: 2
  CHECK(s.scale() == 16384);
  CHECK_FALSE(s.update(false));  // 6: 3 -> doubles, hysteresis back to 2
  CHECK(s.scale() == 32768);
  CHECK(s.update(true));  // hysteresis 2 again: kept
  CHECK(s.scale() == 32768);
  CHECK(s.skipped() == 4);
  CHECK(s.state().iter == 8);
}

TEST_CASE("loss scaler: fixed scale, disabled scaler, minimum scale") {
  fp16_config c;
  c.loss_scale = 128;
  loss_scaler fixed(c, true);
  CHECK(fixed.update(true));
  CHECK(fixed.scale() == 128);
  for (int i = 0; i < 3000; ++i) fixed.update(false);
  CHECK(fixed.scale() == 128);

  loss_scaler off(c, false);
  CHECK(off.scale() == 1);
  CHECK_FALSE(off.update(true));
  CHECK(off.skipped() == 0);

  fp16_config m;
  m.initial_scale_power = 2;
  m.hysteresis = 1;
  m.min_loss_scale = 1;
  loss_scaler low(m, true);
  CHECK(low.update(true));
  CHECK(low.scale() == 2);
  CHECK(low.update(true));
  CHECK(low.scale() == 1);
  CHECK_THROWS_WITH(low.update(true), doctest::Contains("train.fp16.min_loss_scale"));
}

TEST_CASE("loss scaler: state round trip through a checkpoint's JSON") {
  CHECK(scaler_state_of(nlohmann::json::object()) == nullptr);
  auto s = scaler_state_of(nlohmann::json::parse(
      R"({"loss_scaler": {"scale": 512, "hysteresis": 1, "iter": 9, "last_overflow": 4,
          "skipped": 3}})"));
  REQUIRE(s);
  CHECK(s->scale == 512);
  CHECK(s->last_overflow == 4);
  CHECK_THROWS_WITH(scaler_state_of(nlohmann::json::parse(R"({"loss_scaler": {"scale": 1}})")),
                    doctest::Contains("loss_scaler is malformed"));
  CHECK_THROWS_WITH(scaler_state_of(nlohmann::json::parse(
                        R"({"loss_scaler": {"scale": -1, "hysteresis": 1, "iter": 0,
                            "last_overflow": -1, "skipped": 0}})")),
                    doctest::Contains("positive"));
}
