// Learning-rate schedule, gradient-clipping coefficient and AdamW over a slice of the flat
// parameter buffer (decay mask, shard boundaries).
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/optim.hpp"

namespace {

zf::run_config schedule(int steps, int warmup) {
  zf::run_config t;
  t.optimizer.lr = 1e-2;
  t.schedule.min_lr_ratio = 0.1;
  t.train.steps = steps;
  t.schedule.warmup = warmup;
  return t;
}

// A hand-made layout: a decayed "matrix" of 13 floats then an undecayed "bias" of 5 (sizes not
// multiples of 8 so both the vector body and the scalar tail of the kernel run).
zf::param_layout two_tensor_layout() {
  zf::param_layout L;
  L.params.push_back({"w", {13}, 0, 13, true});
  L.params.push_back({"b", {5}, 13, 5, false});
  L.total = 18;
  return L;
}

}  // namespace

TEST_CASE("optim: lr_at warm-up is linear and reaches lr at step warmup-1") {
  auto t = schedule(100, 10);
  for (int s = 0; s < t.schedule.warmup; ++s) {
    CAPTURE(s);
    CHECK(zf::lr_at(t, s) ==
          doctest::Approx(t.optimizer.lr * (s + 1) / t.schedule.warmup).epsilon(1e-12));
  }
  CHECK(zf::lr_at(t, 0) == doctest::Approx(1e-3));
  CHECK(zf::lr_at(t, t.schedule.warmup - 1) == doctest::Approx(t.optimizer.lr).epsilon(1e-12));
  CHECK(zf::lr_at(t, t.schedule.warmup) ==
        doctest::Approx(t.optimizer.lr).epsilon(1e-12));  // cosine starts at lr

  auto none = schedule(50, 0);  // no warm-up: the first step already uses lr
  CHECK(zf::lr_at(none, 0) == doctest::Approx(none.optimizer.lr).epsilon(1e-12));
}

TEST_CASE("optim: lr_at cosine decays monotonically to lr times min_lr_ratio") {
  auto t = schedule(100, 10);
  const double lr_min = t.optimizer.lr * t.schedule.min_lr_ratio;
  for (int s = t.schedule.warmup + 1; s <= t.train.steps; ++s) {
    CAPTURE(s);
    CHECK(zf::lr_at(t, s) < zf::lr_at(t, s - 1));
    CHECK(zf::lr_at(t, s) >= lr_min);
  }
  // Half way through the decay the cosine is at its midpoint.
  CHECK(zf::lr_at(t, 55) == doctest::Approx(0.5 * (t.optimizer.lr + lr_min)).epsilon(1e-12));
  // The schedule (like the PyTorch twin in tests/golden/gen_golden.py) divides by
  // steps - warmup, so it reaches lr_min at s == steps; the last 0-based step (steps - 1) is one
  // cosine increment above it.
  CHECK(zf::lr_at(t, t.train.steps) == doctest::Approx(lr_min).epsilon(1e-12));
  const double last = zf::lr_at(t, t.train.steps - 1);
  const double expect_last =
      lr_min + 0.5 * (t.optimizer.lr - lr_min) *
                   (1 + std::cos(std::numbers::pi * (t.train.steps - 1 - t.schedule.warmup) /
                                 (t.train.steps - t.schedule.warmup)));
  CHECK(last == doctest::Approx(expect_last).epsilon(1e-12));
  CHECK(last > lr_min);
  CHECK(last < lr_min * 1.01);
  // past the end it stays at the floor
  CHECK(zf::lr_at(t, t.train.steps + 50) == doctest::Approx(lr_min).epsilon(1e-12));

  // min_lr_ratio 0 decays to zero; steps == warmup does not divide by zero
  auto z = schedule(20, 5);
  z.schedule.min_lr_ratio = 0;
  CHECK(zf::lr_at(z, 20) == doctest::Approx(0.0));
  auto w = schedule(5, 5);
  CHECK(zf::lr_at(w, 4) == doctest::Approx(w.optimizer.lr));
  CHECK(std::isfinite(zf::lr_at(w, 5)));
  CHECK(zf::lr_at(w, 6) == doctest::Approx(w.optimizer.lr * w.schedule.min_lr_ratio));
}

TEST_CASE("optim: clip_coefficient") {
  CHECK(zf::clip_coefficient(0.5, 1.0) == 1.0f);
  CHECK(zf::clip_coefficient(0.0, 1.0) == 1.0f);
  CHECK(zf::clip_coefficient(4.0, 1.0) == doctest::Approx(1.0 / (4.0 + 1e-6)).epsilon(1e-6));
  CHECK(zf::clip_coefficient(10.0, 2.5) == doctest::Approx(2.5 / (10.0 + 1e-6)).epsilon(1e-6));
  CHECK(zf::clip_coefficient(10.0, 2.5) < 0.26f);
  CHECK(zf::clip_coefficient(1e9, 0.0) == 1.0f);  // 0 disables clipping
  CHECK(zf::clip_coefficient(1.0, 1.0) <= 1.0f);
}

TEST_CASE("optim: adamw applies weight decay only where the layout says so") {
  const auto L = two_tensor_layout();
  zf::run_config t;
  t.optimizer.weight_decay = 0.1;
  const double lr = 0.01;
  zf::adamw opt(L, 0, L.total, t.optimizer);
  CHECK(opt.m().size() == L.total);
  CHECK(opt.v().size() == L.total);

  std::vector<float> p(L.total), g(L.total, 0.0f);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = 0.5f + 0.25f * float(i) * (i % 2 ? -1 : 1);
  const auto before = p;
  opt.step(p.data(), g.data(), lr, 1, 1.0f);
  for (std::size_t i = 0; i < 13; ++i) {  // the matrix: p - lr*wd*p, nothing else (zero grad)
    CAPTURE(i);
    CHECK(p[i] ==
          doctest::Approx(before[i] - lr * t.optimizer.weight_decay * before[i]).epsilon(1e-7));
    CHECK(p[i] != before[i]);
  }
  for (std::size_t i = 13; i < 18; ++i) {  // the bias: untouched, bit for bit
    CAPTURE(i);
    CHECK(p[i] == before[i]);
  }
  for (std::size_t i = 0; i < L.total; ++i) {
    CHECK(opt.m()[i] == 0.0f);
    CHECK(opt.v()[i] == 0.0f);
  }
}

TEST_CASE("optim: adamw over a slice of the buffer touches only that slice") {
  const auto L = two_tensor_layout();
  zf::run_config t;
  t.optimizer.weight_decay = 0.1;
  std::vector<float> p(L.total), g(L.total);
  for (std::size_t i = 0; i < p.size(); ++i) {
    p[i] = 0.1f * float(i + 1);
    g[i] = 0.05f * float(i % 5) - 0.1f;
  }
  // One optimizer over everything vs two shards [0, 9) and [9, 18) (the cut is inside "w").
  auto full = p, sharded = p;
  zf::adamw all(L, 0, L.total, t.optimizer);
  zf::adamw lo(L, 0, 9, t.optimizer), hi(L, 9, L.total, t.optimizer);
  CHECK(lo.m().size() == 9);
  CHECK(hi.m().size() == 9);
  CHECK(hi.begin() == 9);
  CHECK(hi.end() == L.total);
  for (int step = 1; step <= 3; ++step) {
    all.step(full.data(), g.data(), 1e-2, step, 0.5f);
    lo.step(sharded.data(), g.data(), 1e-2, step, 0.5f);
    hi.step(sharded.data(), g.data(), 1e-2, step, 0.5f);
  }
  CHECK(sharded == full);  // bit-identical: sharding changes nothing
  for (std::size_t i = 0; i < 9; ++i) CHECK(lo.m()[i] == all.m()[i]);
  for (std::size_t i = 9; i < L.total; ++i) CHECK(hi.v()[i - 9] == all.v()[i]);

  // A shard [5, 15) (crossing the w/b boundary) leaves everything outside it alone.
  auto q = p;
  zf::adamw mid(L, 5, 15, t.optimizer);
  mid.step(q.data(), g.data(), 1e-2, 1, 1.0f);
  for (std::size_t i = 0; i < L.total; ++i) {
    CAPTURE(i);
    if (i < 5 || i >= 15)
      CHECK(q[i] == p[i]);
    else if (g[i] != 0.0f)
      CHECK(q[i] != p[i]);
  }
  // and it matches the full optimizer's first step inside the slice
  auto r = p;
  zf::adamw one(L, 0, L.total, t.optimizer);
  one.step(r.data(), g.data(), 1e-2, 1, 1.0f);
  for (std::size_t i = 5; i < 15; ++i) CHECK(q[i] == r[i]);
}
