// Data efficiency schedules (runtime/train/curriculum.hpp, issue 13): each pacing function, the
// percentile pool and the random-LTD kept-token schedule against difficulties computed by hand
// (the arithmetic is in the comments), the random-LTD layer list, and every refusal's message.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/train/curriculum.hpp"
#include "test_util.hpp"

using namespace zf;
using zf::testing::error_of;

namespace {

pacing_config root(int lo, int hi, std::int64_t total, int mult, int r) {
  pacing_config c;
  c.kind = r == 1 ? pacing_kind::fixed_linear : pacing_kind::fixed_root;
  c.min_difficulty = lo;
  c.max_difficulty = hi;
  c.total_steps = total;
  c.difficulty_step = mult;
  c.root_degree = r;
  c.validate();
  return c;
}

pacing_config discrete() {
  pacing_config c;
  c.kind = pacing_kind::fixed_discrete;
  c.min_difficulty = 8;
  c.max_difficulty = 32;
  c.difficulties = {8, 16, 32};
  c.max_steps = {5, 10};
  return c;
}

ltd_schedule ltd(int lo, int hi, std::int64_t steps, int mult) {
  ltd_schedule s;
  s.min_value = lo;
  s.max_value = hi;
  s.require_steps = steps;
  s.seq_per_step = mult;
  return s;
}

}  // namespace

TEST_CASE("curriculum: fixed_linear by hand, rounded to difficulty_step") {
  // min 8, max 64, 100 steps, multiples of 8: d = floor(step/100 * 56 + 8), d -= d % 8.
  const pacing_config c = root(8, 64, 100, 8, 1);
  CHECK(difficulty_at(c, 0) == 8);      // 0 * 56 + 8 = 8
  CHECK(difficulty_at(c, 10) == 8);     // 5.6 + 8 = 13.6 -> 13 -> 13 - 5 = 8
  CHECK(difficulty_at(c, 15) == 16);    // 8.4 + 8 = 16.4 -> 16
  CHECK(difficulty_at(c, 50) == 32);    // 28 + 8 = 36 -> 36 - 4 = 32
  CHECK(difficulty_at(c, 57) == 32);    // 31.92 + 8 = 39.92 -> 39 -> 32
  CHECK(difficulty_at(c, 99) == 56);    // 55.44 + 8 = 63.44 -> 63 -> 56
  CHECK(difficulty_at(c, 100) == 64);   // done: max
  CHECK(difficulty_at(c, 1000) == 64);  // beyond total: max
  CHECK(difficulty_at(c, -5) == 8);     // a negative step reads as 0
  CHECK(pacing_kind_name(c.kind) == "fixed_linear");
}

TEST_CASE("curriculum: fixed_linear floors exactly where a double product falls short") {
  // min 0, max 100, 100 steps, step 1: d = step exactly. In doubles 0.57 * 100 = 56.99999999999999
  // and 0.29 * 100 = 28.999999999999996 (DeepSpeed's float gives 56 and 28).
  const pacing_config c = root(0, 100, 100, 1, 1);
  CHECK(std::floor(57.0 / 100.0 * 100.0) == 56.0);  // the shortfall the integer check corrects
  for (int s = 0; s <= 100; ++s) CHECK(difficulty_at(c, s) == s);
  // min 10, max 40, 7 steps: step 3 -> 3/7 * 30 = 12.857 -> 22.857 -> 22.
  CHECK(difficulty_at(root(10, 40, 7, 1, 1), 3) == 22);
}

TEST_CASE("curriculum: max not a multiple of difficulty_step is reached only at total_steps") {
  // min 0, max 100, 10 steps, multiples of 16.
  const pacing_config c = root(0, 100, 10, 16, 1);
  CHECK(difficulty_at(c, 5) == 48);    // 50 -> 50 - 2 = 48
  CHECK(difficulty_at(c, 9) == 80);    // 90 -> 90 - 10 = 80
  CHECK(difficulty_at(c, 10) == 100);  // at total: max, not 96
  CHECK(difficulty_at(c, 11) == 100);
  // min == max: constant.
  const pacing_config flat = root(32, 32, 10, 8, 1);
  CHECK(difficulty_at(flat, 0) == 32);
  CHECK(difficulty_at(flat, 9) == 32);
}

TEST_CASE("curriculum: fixed_root square and cube roots by hand") {
  // r = 2, min 0, max 100, 100 steps, step 1: d = floor(sqrt(step / 100) * 100).
  const pacing_config sq = root(0, 100, 100, 1, 2);
  CHECK(difficulty_at(sq, 0) == 0);
  CHECK(difficulty_at(sq, 1) == 10);   // sqrt(0.01) = 0.1
  CHECK(difficulty_at(sq, 25) == 50);  // sqrt(0.25) = 0.5
  CHECK(difficulty_at(sq, 50) == 70);  // sqrt(0.5) = 0.7071 -> 70.71 -> 70
  CHECK(difficulty_at(sq, 81) == 90);  // sqrt(0.81) = 0.9
  CHECK(difficulty_at(sq, 99) == 99);  // sqrt(0.99) = 0.99499 -> 99.499 -> 99
  CHECK(difficulty_at(sq, 100) == 100);
  CHECK(pacing_kind_name(sq.kind) == "fixed_root");
  // r = 2, min 8, max 64, 64 steps, multiples of 8: d = floor(sqrt(step/64) * 56 + 8), rounded.
  const pacing_config sq8 = root(8, 64, 64, 8, 2);
  CHECK(difficulty_at(sq8, 4) == 16);   // sqrt(1/16) = 0.25 -> 14 + 8 = 22 -> 16
  CHECK(difficulty_at(sq8, 16) == 32);  // 0.5 -> 28 + 8 = 36 -> 32
  CHECK(difficulty_at(sq8, 36) == 48);  // 0.75 -> 42 + 8 = 50 -> 48
  CHECK(difficulty_at(sq8, 63) == 56);  // sqrt(63/64) = 0.99216 -> 55.56 + 8 = 63.56 -> 63 -> 56
  CHECK(difficulty_at(sq8, 64) == 64);
  // r = 3, min 0, max 1000, 1000 steps: cbrt(0.125) = 0.5 -> 500 (pow's 0.49999... corrected),
  // cbrt(0.008) = 0.2 -> 200, cbrt(0.5) = 0.7937 -> 793.
  const pacing_config cube = root(0, 1000, 1000, 1, 3);
  CHECK(difficulty_at(cube, 125) == 500);
  CHECK(difficulty_at(cube, 8) == 200);
  CHECK(difficulty_at(cube, 500) == 793);
  CHECK(difficulty_at(cube, 1) == 100);  // cbrt(0.001) = 0.1
}

TEST_CASE("curriculum: fixed_discrete holds each difficulty through its max step") {
  // difficulties 8, 16, 32 with max steps 5, 10: 8 for steps 0..5, 16 for 6..10, then 32.
  const pacing_config c = discrete();
  c.validate();
  CHECK(difficulty_at(c, 0) == 8);
  CHECK(difficulty_at(c, 5) == 8);
  CHECK(difficulty_at(c, 6) == 16);
  CHECK(difficulty_at(c, 10) == 16);
  CHECK(difficulty_at(c, 11) == 32);
  CHECK(difficulty_at(c, 100000) == 32);
  pacing_config one;
  one.kind = pacing_kind::fixed_discrete;
  one.min_difficulty = one.max_difficulty = 4;
  one.difficulties = {4};
  one.validate();
  CHECK(difficulty_at(one, 0) == 4);
  CHECK(difficulty_at(one, 7) == 4);
  CHECK(pacing_kind_name(c.kind) == "fixed_discrete");
}

TEST_CASE("curriculum: pacing names parse, others are refused") {
  CHECK(parse_pacing_kind("fixed_linear") == pacing_kind::fixed_linear);
  CHECK(parse_pacing_kind("fixed_root") == pacing_kind::fixed_root);
  CHECK(parse_pacing_kind("fixed_discrete") == pacing_kind::fixed_discrete);
  CHECK(error_of([] { parse_pacing_kind("fixed_log"); }) ==
        "data.curriculum.pacing: unknown pacing 'fixed_log' (expected fixed_linear, fixed_root "
        "or fixed_discrete)");
  pacing_config c = root(0, 8, 10, 1, 1);
  c.kind = pacing_kind(7);
  CHECK(error_of([&] { c.validate(); }) == "data.curriculum.pacing: unknown pacing (value 7)");
}

TEST_CASE("curriculum: pacing refusals name the key and the values") {
  auto msg = [](auto edit) {
    pacing_config c = root(8, 64, 100, 8, 2);
    edit(c);
    return error_of([&] { c.validate(); });
  };
  CHECK(msg([](pacing_config& c) { c.min_difficulty = 64, c.max_difficulty = 32; }) ==
        "data.curriculum.min_difficulty: must not exceed max_difficulty (got 64 > 32)");
  CHECK(msg([](pacing_config& c) { c.total_steps = 0; }) ==
        "data.curriculum.total_steps: must be at least 1, got 0");
  CHECK(msg([](pacing_config& c) { c.difficulty_step = 0; }) ==
        "data.curriculum.difficulty_step: must be at least 1, got 0");
  CHECK(msg([](pacing_config& c) { c.root_degree = 0; }) ==
        "data.curriculum.root_degree: must be at least 1, got 0");
  CHECK(msg([](pacing_config& c) { c.min_difficulty = 12; }) ==
        "data.curriculum.min_difficulty: must be a multiple of difficulty_step (got 12, step 8)");
  // root_degree is fixed_root's alone.
  pacing_config lin = root(8, 64, 100, 8, 1);
  lin.root_degree = 0;
  CHECK_NOTHROW(lin.validate());
}

TEST_CASE("curriculum: fixed_discrete refusals name the list and the element") {
  auto msg = [](auto edit) {
    pacing_config c = discrete();
    edit(c);
    return error_of([&] { c.validate(); });
  };
  CHECK(msg([](pacing_config& c) { c.difficulties.clear(), c.max_steps.clear(); }) ==
        "data.curriculum.difficulties: fixed_discrete needs at least one difficulty");
  CHECK(msg([](pacing_config& c) {
          c.max_steps = {5, 10, 15};
        }) ==
        "data.curriculum.max_steps: must have one element fewer than difficulties (the last "
        "difficulty holds after the last max step); got 3 max steps for 3 difficulties");
  CHECK(msg([](pacing_config& c) {
          c.difficulties = {8, 32, 16};
        }) == "data.curriculum.difficulties: must increase, got 16 after 32 (element 2)");
  CHECK(msg([](pacing_config& c) {
          c.difficulties = {8, 16, 48};
        }) ==
        "data.curriculum.difficulties: 48 (element 2) is outside min_difficulty..max_difficulty "
        "(8..32)");
  CHECK(msg([](pacing_config& c) {
          c.max_steps = {10, 5};
        }) == "data.curriculum.max_steps: must increase, got 5 after 10 (element 1)");
  CHECK(msg([](pacing_config& c) {
          c.max_steps = {-1, 5};
        }) == "data.curriculum.max_steps: must not be negative, got -1 (element 0)");
  CHECK(msg([](pacing_config& c) { c.min_difficulty = 40; }) ==
        "data.curriculum.min_difficulty: must not exceed max_difficulty (got 40 > 32)");
}

TEST_CASE("curriculum: percentile pool and threshold as DeepSpeed's sampler counts") {
  // 1050 samples, max percentile 100: 1050 / 100 = 10 samples a percentile; the last takes all.
  CHECK(percentile_pool_size(1050, 0) == 0);
  CHECK(percentile_pool_size(1050, 1) == 10);
  CHECK(percentile_pool_size(1050, 50) == 500);
  CHECK(percentile_pool_size(1050, 99) == 990);
  CHECK(percentile_pool_size(1050, 100) == 1050);
  // Fewer samples than percentiles: nothing until the last (50 / 100 = 0 a percentile).
  CHECK(percentile_pool_size(50, 99) == 0);
  CHECK(percentile_pool_size(50, 100) == 50);
  // 200 values 0, 0.5, ..., 99.5: 2 a percentile; percentile p ends at value[2p - 1] = p - 0.5.
  std::vector<double> v;
  for (int i = 0; i < 200; ++i) v.push_back(i * 0.5);
  CHECK(percentile_threshold(v, 1) == 0.5);     // pool 2 -> v[1]
  CHECK(percentile_threshold(v, 50) == 49.5);   // pool 100 -> v[99]
  CHECK(percentile_threshold(v, 100) == 99.5);  // pool 200 -> v[199]
  CHECK(std::isinf(percentile_threshold(v, 0)));
  CHECK(percentile_threshold(v, 0) < 0);
  // max percentile 10 over 10 values 1..10: 1 a step, 3 -> v[2] = 3.
  CHECK(percentile_threshold({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 3, 10) == 3);
  CHECK(error_of([] { percentile_pool_size(10, 101); }) ==
        "data.curriculum: percentile difficulty 101 is outside 0..100");
  CHECK(error_of([] { percentile_pool_size(10, -1); }) ==
        "data.curriculum: percentile difficulty -1 is outside 0..100");
  CHECK(error_of([] { percentile_pool_size(10, 0, 0); }) ==
        "data.curriculum.max_difficulty: a percentile curriculum needs max_difficulty >= 1 (the "
        "100th percentile), got 0");
}

TEST_CASE("curriculum: random-LTD kept tokens grow linearly in multiples of seq_per_step") {
  // min 16, max 128, 100 steps, multiples of 16: t = floor(step/100 * 112 + 16), t -= t % 16.
  const ltd_schedule s = ltd(16, 128, 100, 16);
  s.validate();
  CHECK(kept_tokens_at(s, 0) == 16);
  CHECK(kept_tokens_at(s, 10) == 16);    // 11.2 + 16 = 27.2 -> 27 -> 16
  CHECK(kept_tokens_at(s, 15) == 32);    // 16.8 + 16 = 32.8 -> 32
  CHECK(kept_tokens_at(s, 50) == 64);    // 56 + 16 = 72 -> 64
  CHECK(kept_tokens_at(s, 99) == 112);   // 110.88 + 16 = 126.88 -> 126 -> 112
  CHECK(kept_tokens_at(s, 100) == 128);  // the full sequence from require_steps on
  CHECK(kept_tokens_at(s, 5000) == 128);
  // Step 1: min 3, max 10, 7 steps -> t = 3 + step exactly.
  const ltd_schedule unit = ltd(3, 10, 7, 1);
  for (int k = 0; k <= 8; ++k) CHECK(kept_tokens_at(unit, k) == std::min(3 + k, 10));
}

TEST_CASE("curriculum: random-LTD schedule refusals name train.random_ltd keys") {
  auto msg = [](ltd_schedule s) { return error_of([&] { s.validate(); }); };
  CHECK(msg(ltd(0, 128, 100, 16)) == "train.random_ltd.min_tokens: must be at least 1, got 0");
  CHECK(msg(ltd(256, 128, 100, 16)) ==
        "train.random_ltd.min_tokens: must not exceed the sequence length (got 256 > 128)");
  CHECK(msg(ltd(16, 128, 0, 16)) == "train.random_ltd.total_steps: must be at least 1, got 0");
  CHECK(msg(ltd(16, 128, 100, 0)) == "train.random_ltd.step_size: must be at least 1, got 0");
  CHECK(msg(ltd(20, 128, 100, 16)) ==
        "train.random_ltd.min_tokens: must be a multiple of step_size (got 20, step 16)");
}

TEST_CASE("curriculum: random-LTD layers default to all but the first and last") {
  CHECK(ltd_layers(6) == std::vector<int>{1, 2, 3, 4});
  CHECK(ltd_layers(3) == std::vector<int>{1});
  CHECK(ltd_layers(2).empty());
  CHECK(ltd_layers(1).empty());
  CHECK(ltd_layers(6, {4, 1, 2}) == std::vector<int>{1, 2, 4});
  CHECK(ltd_layers(6, {0, 5}) == std::vector<int>{0, 5});
  CHECK(error_of([] {
          ltd_layers(6, {1, 6});
        }) == "train.random_ltd.layers: layer 6 is out of range (model.n_layer = 6, ids 0..5)");
  CHECK(error_of([] { ltd_layers(6, {-1}); }) ==
        "train.random_ltd.layers: layer -1 is out of range (model.n_layer = 6, ids 0..5)");
  CHECK(error_of([] {
          ltd_layers(6, {2, 3, 2});
        }) == "train.random_ltd.layers: layer 2 is listed twice");
}
