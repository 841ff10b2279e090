// The data-efficiency schedule (runtime/train/data_schedule): batch shapes, pool difficulty and
// kept tokens by step against hand-computed values, token counts, the learning rate by steps
// (bit for bit the plain schedule), tokens and layer-tokens, and the refusals naming their key.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "runtime/train/data_schedule.hpp"
#include "runtime/train/optim.hpp"
#include "test_util.hpp"

using namespace zf;
using zf::testing::error_of;

namespace {
run_config base() {
  run_config c;
  c.model.n_layer = 4;
  c.train.batch_size = 4;
  c.train.seq_len = 64;
  c.train.steps = 100;
  c.schedule.warmup = 10;
  return c;
}
}  // namespace

TEST_CASE("data schedule: without settings every step is the plain batch and lr") {
  const run_config c = base();
  const data_schedule d(c, 2);
  CHECK_FALSE(d.active());
  for (int64_t s : {0, 5, 99}) {
    const step_plan p = d.at(s);
    CHECK(p.rows == 4);
    CHECK(p.t == 64);
    CHECK(p.seqlen == 0);
    CHECK(p.pool_difficulty == -1);
    CHECK(p.ltd_keep == 0);
    CHECK(d.step_tokens(s) == 4 * 64 * 2);
    CHECK(d.step_layer_tokens(s) == 4 * 64 * 2 * 4);
  }
  CHECK(d.tokens_before(10) == 10 * 512);
  for (int s = 0; s < 100; ++s) CHECK(d.lr_at(s, 0, 0) == lr_at(c, s));  // bit for bit
}

TEST_CASE("data schedule: seqlen truncates or reshapes by the pacing") {
  run_config c = base();
  auto& q = c.data.curriculum.seqlen;
  q.enabled = true;
  q.min_difficulty = 16;
  q.total_steps = 10;
  q.difficulty_step = 16;  // max 0 = train.seq_len: 16 -> 64
  const data_schedule d(c);
  CHECK(d.active());
  // floor(s/10 * 48 + 16) down to a multiple of 16
  const int want[] = {16, 16, 16, 16, 32, 32, 32, 48, 48, 48, 64, 64};
  for (int s = 0; s < 12; ++s) {
    CAPTURE(s);
    CHECK(d.at(s).seqlen == want[s]);
    CHECK(d.at(s).t == want[s]);
    CHECK(d.at(s).rows == 4);
    CHECK(d.step_tokens(s) == 4 * want[s]);
  }
  CHECK(d.tokens_before(3) == 3 * 64);
  c.data.curriculum.seqlen_mode = "reshape";  // 4 x 64 tokens in rows of the difficulty
  const data_schedule r(c);
  CHECK(r.at(0).rows == 16);
  CHECK(r.at(0).t == 16);
  CHECK(r.at(4).rows == 8);
  CHECK(r.at(11).rows == 4);
  for (int s = 0; s < 12; ++s) {  // whole rows only: 48 packs 5 rows (240 of the 256 tokens)
    const int t = r.at(s).t;
    CHECK(r.step_tokens(s) == 256 / t * t);
  }
}

TEST_CASE("data schedule: random-LTD keeps tokens by its schedule in the middle layers") {
  run_config c = base();
  c.train.random_ltd.enabled = true;
  c.train.random_ltd.min_tokens = 16;
  c.train.random_ltd.total_steps = 8;
  c.train.random_ltd.step_size = 16;
  const data_schedule d(c);
  CHECK(d.ltd_layers() == std::vector<int>{1, 2});
  // floor(s/8 * 48 + 16) down to a multiple of 16; 64 = every token: no dropping (0)
  const int keep[] = {16, 16, 16, 32, 32, 32, 48, 48, 0, 0};
  for (int s = 0; s < 10; ++s) {
    CAPTURE(s);
    CHECK(d.at(s).ltd_keep == keep[s]);
    const int k = keep[s] ? keep[s] : 64;
    CHECK(d.step_layer_tokens(s) == 4 * (4 * 64 - 2 * (64 - k)));
    CHECK(d.step_tokens(s) == 4 * 64);
  }
  c.train.random_ltd.min_tokens = 0;  // defaults: seq_len / 2 over train.steps / 2
  c.train.random_ltd.total_steps = 0;
  const data_schedule e(c);
  CHECK(e.at(0).ltd_keep == 32);
  CHECK(e.at(49).ltd_keep == 48);
  CHECK(e.at(50).ltd_keep == 0);
}

TEST_CASE("data schedule: the learning rate decays by tokens or layer-tokens") {
  run_config c = base();
  c.schedule.warmup = 0;
  c.schedule.decay_by = "tokens";
  c.train.tokens = 1000;
  const data_schedule d(c);
  const double lr = c.optimizer.lr, lo = lr * c.schedule.min_lr_ratio;
  auto cosine = [&](double p) {
    return lo + 0.5 * (lr - lo) * (1 + std::cos(std::numbers::pi * p));
  };
  CHECK(d.lr_at(3, 0, 0) == doctest::Approx(lr));
  CHECK(d.lr_at(3, 250, 0) == doctest::Approx(cosine(0.25)));
  CHECK(d.lr_at(3, 5000, 0) == doctest::Approx(lo));
  c.schedule.decay_by = "layer_tokens";  // of train.tokens * n_layer
  const data_schedule l(c);
  CHECK(l.lr_at(3, 0, 2000) == doctest::Approx(cosine(0.5)));
  CHECK(l.total_layer_tokens() == 4000);
  c.train.tokens = 0;  // total = train.steps full steps
  const data_schedule f(c);
  CHECK(f.total_tokens() == 100 * 4 * 64);
  c.schedule.decay_by = "tokens";
  c.schedule.warmup = 2;  // measured from the end of the warm-up (2 full steps = 512 tokens)
  const data_schedule w(c);
  CHECK(w.lr_at(1, 0, 0) == doctest::Approx(lr));
  CHECK(w.lr_at(5, 512 + (25600 - 512) / 2, 0) == doctest::Approx(cosine(0.5)));
}

TEST_CASE("data schedule: settings that cannot be followed are refused naming the key") {
  run_config c = base();
  c.data.curriculum.seqlen.enabled = true;
  c.data.curriculum.seqlen.min_difficulty = 8;
  c.data.curriculum.seqlen.max_difficulty = 128;
  c.data.curriculum.seqlen.total_steps = 10;
  CHECK(error_of([&] { data_schedule d(c); }) ==
        "data.curriculum.seqlen.max_difficulty: must not exceed train.seq_len (64), got 128");
  c.data.curriculum.seqlen.max_difficulty = 4;
  CHECK(error_of([&] { data_schedule d(c); }) ==
        "data.curriculum.seqlen.min_difficulty: must not exceed max_difficulty (got 8 > 4)");
  c.data.curriculum.seqlen.max_difficulty = 64;
  c.data.curriculum.seqlen.difficulty_type = "percentile";
  CHECK(error_of([&] {
          data_schedule d(c);
        }).starts_with("data.curriculum.seqlen.difficulty_type: the sequence length is a value"));
  c.data.curriculum.seqlen.enabled = false;
  c.data.curriculum.vocab_rarity.enabled = true;
  c.data.curriculum.vocab_rarity.pacing = "fixed_discrete";
  c.data.curriculum.vocab_rarity.min_difficulty = 10;
  c.data.curriculum.vocab_rarity.max_difficulty = 100;
  c.data.curriculum.vocab_rarity.difficulties = {10, 50, 40};
  c.data.curriculum.vocab_rarity.max_steps = {5, 10};
  CHECK(error_of([&] { data_schedule d(c); }) ==
        "data.curriculum.vocab_rarity.difficulties: must increase, got 40 after 50 (element 2)");
  c.data.curriculum.vocab_rarity.difficulties = {10, 50, 100};
  c.data.curriculum.custom = c.data.curriculum.vocab_rarity;
  CHECK(error_of([&] {
          data_schedule d(c);
        }).starts_with("data.curriculum.custom: one pool metric at a time"));
  c.data.curriculum.custom.enabled = false;
  c.data.curriculum.vocab_rarity.difficulty_type = "percentile";
  c.data.curriculum.vocab_rarity.max_difficulty = 200;
  c.data.curriculum.vocab_rarity.difficulties = {10, 50, 200};
  CHECK(error_of([&] { data_schedule d(c); }) ==
        "data.curriculum.vocab_rarity.max_difficulty: a percentile is 0..100, got 10..200");
  c.data.curriculum.vocab_rarity.enabled = false;
  c.train.random_ltd.enabled = true;
  c.train.random_ltd.layers = {1, 4};
  CHECK(error_of([&] { data_schedule d(c); }) ==
        "train.random_ltd.layers: layer 4 is out of range (model.n_layer = 4, ids 0..3)");
  c.train.random_ltd.layers = {};
  c.model.n_layer = 2;
  CHECK(error_of([&] {
          data_schedule d(c);
        }).starts_with("train.random_ltd.layers: no layer to drop tokens in"));
  c.model.n_layer = 4;
  c.train.random_ltd.min_tokens = 20;  // step_size 16
  CHECK(error_of([&] { data_schedule d(c); }) ==
        "train.random_ltd.min_tokens: must be a multiple of step_size (got 20, step 16)");
}
