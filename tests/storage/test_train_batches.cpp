// Curriculum batches (storage/train_batches): with nothing set they are the dataset's batches bit
// for bit; a seqlen curriculum gives windows of the scheduled length (truncated or reshaped), a
// pool curriculum draws only samples of the pool, random-LTD's keep travels with the batch, and
// ranks split one global batch exactly as one rank would see it.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <numeric>
#include <set>

#include "runtime/core/error.hpp"
#include "storage/sample_metrics.hpp"
#include "storage/train_batches.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace zf;
using zf::storage::batch;
using zf::storage::dataset;
using zf::storage::token_shard;
using zf::storage::train_batches;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

constexpr int kTokens = 20000, kT = 32;

fs::path iota_path(const temp_dir& dir) {
  std::vector<int> ids(kTokens);
  std::iota(ids.begin(), ids.end(), 0);
  const auto p = dir / "iota.tok";
  storage::write_token_shard(p, ids, uint32_t(kTokens));
  return p;
}

run_config base() {
  run_config c;
  c.model.n_layer = 4;
  c.train.batch_size = 4;
  c.train.seq_len = kT;
  c.train.steps = 50;
  c.train.grad_accum = 2;
  return c;
}

// Every row is a run of consecutive tokens (the iota corpus): inputs[i] = start + i and the
// targets one further.
void check_windows(const batch& b) {
  for (int r = 0; r < b.b; ++r)
    for (int i = 0; i < b.t; ++i) {
      const int s = b.inputs[std::size_t(r) * b.t];
      REQUIRE(b.inputs[std::size_t(r) * b.t + i] == s + i);
      REQUIRE(b.targets[std::size_t(r) * b.t + i] == s + i + 1);
    }
}

}  // namespace

TEST_CASE("train batches: with no setting they are the dataset's batches bit for bit") {
  temp_dir d("tb-plain");
  auto data = std::make_shared<const dataset>(token_shard::open(iota_path(d)), 0.1, kT);
  const run_config c = base();
  const train_batches tb(data, std::make_shared<const data_schedule>(c), nullptr, 7, 4, 2);
  for (int64_t micro : {0, 3, 17})
    for (int rank : {0, 1}) {
      batch a, b;
      tb.fill_train(micro, rank, a);
      data->fill_train_rows(7, micro, rank * 4, 4, b);
      CHECK(a.inputs == b.inputs);
      CHECK(a.targets == b.targets);
      CHECK(a.ltd_keep == 0);
    }
}

TEST_CASE("train batches: a seqlen curriculum held at train.seq_len gives the plain batches") {
  temp_dir d("tb-seqlen-full");
  auto data = std::make_shared<const dataset>(token_shard::open(iota_path(d)), 0.1, kT);
  run_config c = base();
  c.data.curriculum.seqlen.enabled = true;  // min = max = seq_len: the curriculum path, no change
  c.data.curriculum.seqlen.min_difficulty = kT;
  c.data.curriculum.seqlen.total_steps = 10;
  const train_batches tb(data, std::make_shared<const data_schedule>(c), nullptr, 7, 4, 2);
  for (int64_t micro : {0, 5, 19})
    for (int rank : {0, 1}) {
      batch a, b;
      tb.fill_train(micro, rank, a);
      data->fill_train_rows(7, micro, rank * 4, 4, b);
      CHECK(a.t == kT);
      CHECK(a.inputs == b.inputs);
      CHECK(a.targets == b.targets);
    }
}

TEST_CASE("train batches: the seqlen curriculum truncates or reshapes to the scheduled length") {
  temp_dir d("tb-seqlen");
  auto data = std::make_shared<const dataset>(token_shard::open(iota_path(d)), 0.1, kT);
  run_config c = base();
  auto& q = c.data.curriculum.seqlen;
  q.enabled = true;
  q.min_difficulty = 8;
  q.total_steps = 6;
  q.difficulty_step = 8;  // 8 -> 32 over 6 steps
  for (const char* mode : {"truncate", "reshape"}) {
    CAPTURE(mode);
    c.data.curriculum.seqlen_mode = mode;
    auto plan = std::make_shared<const data_schedule>(c);
    const train_batches tb(data, plan, nullptr, 7, 4, 2);
    for (int64_t micro = 0; micro < 16; ++micro) {
      const step_plan p = plan->at(micro / 2);  // grad_accum 2
      batch b;
      tb.fill_train(micro, 1, b);
      CHECK(b.t == p.t);
      CHECK(b.b == p.rows);
      check_windows(b);
      for (int x : b.inputs) CHECK(std::size_t(x) < data->train_tokens());
    }
    batch v;  // validation stays full length
    tb.fill_val(0, v);
    CHECK(v.t == kT);
    CHECK(v.b == 4);
  }
  batch b0;
  const train_batches tb(data, std::make_shared<const data_schedule>(c), nullptr, 7, 4, 2);
  tb.fill_train(0, 0, b0);
  CHECK(b0.b == 16);  // reshape at step 0: 4 x 32 tokens in rows of 8
}

TEST_CASE("train batches: two ranks split the one-rank global batch row for row") {
  temp_dir d("tb-ranks");
  auto data = std::make_shared<const dataset>(token_shard::open(iota_path(d)), 0.1, kT);
  run_config c = base();
  c.data.curriculum.seqlen.enabled = true;
  c.data.curriculum.seqlen.min_difficulty = 16;
  c.data.curriculum.seqlen.total_steps = 4;
  c.data.curriculum.seqlen.difficulty_step = 16;
  c.train.batch_size = 2;
  auto plan2 = std::make_shared<const data_schedule>(c, 2);
  c.train.batch_size = 4;
  auto plan1 = std::make_shared<const data_schedule>(c, 1);
  const train_batches two(data, plan2, nullptr, 9, 2, 1), one(data, plan1, nullptr, 9, 4, 1);
  for (int64_t micro : {0, 2, 5}) {
    batch all, r0, r1;
    one.fill_train(micro, 0, all);
    two.fill_train(micro, 0, r0);
    two.fill_train(micro, 1, r1);
    std::vector<int> joined = r0.inputs;
    joined.insert(joined.end(), r1.inputs.begin(), r1.inputs.end());
    CHECK(joined == all.inputs);
  }
}

TEST_CASE("train batches: a pool curriculum draws only samples of the pool") {
  temp_dir d("tb-pool");
  const auto path = iota_path(d);
  auto data = std::make_shared<const dataset>(token_shard::open(path), 0.1, kT);
  const auto shard = token_shard::open(path);
  const std::size_t n = storage::sample_count(data->train_tokens(), kT);
  REQUIRE(std::gcd(std::size_t(37), n) == 1);  // so the values below are a permutation of 0..n-1
  std::vector<double> values(n);
  for (std::size_t i = 0; i < n; ++i) values[i] = double((i * 37) % n);  // a permutation
  storage::write_metric_index(d / "idx", "custom", shard, data->train_tokens(), kT, values);
  auto index = std::make_shared<const storage::metric_index>(
      storage::metric_index::open(d / "idx", "custom", shard, data->train_tokens(), kT));
  run_config c = base();
  auto& m = c.data.curriculum.custom;
  m.enabled = true;
  m.difficulty_type = "percentile";
  m.min_difficulty = 10;
  m.max_difficulty = 100;
  m.total_steps = 10;
  m.difficulty_step = 10;
  auto plan = std::make_shared<const data_schedule>(c);
  const train_batches tb(data, plan, index, 3, 4, 2);
  std::set<int> seen_at_start;
  for (int64_t micro = 0; micro < 40; ++micro) {
    const int pct = plan->at(micro / 2).pool_difficulty;
    const int64_t pool = tb.pool_size(pct);
    CHECK(pool == (pct == 100 ? int64_t(n) : int64_t(n) / 100 * pct));
    batch b;
    tb.fill_train(micro, 0, b);
    check_windows(b);
    for (int r = 0; r < b.b; ++r) {
      const int start = b.inputs[std::size_t(r) * b.t];
      REQUIRE(start % kT == 0);  // a sample's window
      const double v = values[std::size_t(start / kT)];
      CHECK(v < double(pool));  // value k is the k-th easiest: inside the pool
      if (micro < 2) seen_at_start.insert(start);
    }
  }
  CHECK(seen_at_start.size() > 4);  // drawn, not one sample over and over
  // by value: samples whose value is at most the difficulty
  m.difficulty_type = "value";
  m.min_difficulty = 100;
  m.max_difficulty = 300;
  m.difficulty_step = 100;
  const train_batches tv(data, std::make_shared<const data_schedule>(c), index, 3, 4, 2);
  CHECK(tv.pool_size(100) == 101);
  CHECK(tv.pool_size(300) == 301);
  m.min_difficulty = 0;  // with no value below 0... value 0 exists: a pool of one
  m.difficulty_step = 1;
  const train_batches t0(data, std::make_shared<const data_schedule>(c), index, 3, 4, 2);
  CHECK(t0.pool_size(0) == 1);
  m.min_difficulty = 0;
  m.difficulty_type = "percentile";
  m.max_difficulty = 100;
  m.difficulty_step = 10;
  CHECK(error_of([&] {
          train_batches e(data, std::make_shared<const data_schedule>(c), index, 3, 4, 2);
        }).starts_with("data.curriculum.custom.min_difficulty: the pool at step 0"));
  CHECK(error_of([&] {
          train_batches e(data, std::make_shared<const data_schedule>(c), nullptr, 3, 4, 2);
        }).starts_with("data.curriculum.custom: no metric index given"));
}

TEST_CASE("train batches: random-LTD's kept tokens and seed travel with the batch") {
  temp_dir d("tb-ltd");
  auto data = std::make_shared<const dataset>(token_shard::open(iota_path(d)), 0.1, kT);
  run_config c = base();
  c.train.random_ltd.enabled = true;
  c.train.random_ltd.min_tokens = 8;
  c.train.random_ltd.total_steps = 4;
  c.train.random_ltd.step_size = 8;
  auto plan = std::make_shared<const data_schedule>(c);
  const train_batches tb(data, plan, nullptr, 5, 4, 2);
  std::set<uint64_t> seeds;
  for (int64_t micro = 0; micro < 10; ++micro) {
    batch b;
    tb.fill_train(micro, 0, b);
    CHECK(b.ltd_keep == plan->at(micro / 2).ltd_keep);
    CHECK(b.t == kT);
    if (b.ltd_keep) seeds.insert(b.ltd_seed);
    batch again;
    tb.fill_train(micro, 0, again);
    CHECK(again.ltd_seed == b.ltd_seed);  // a pure function of (seed, micro, rank)
  }
  CHECK(plan->at(4).ltd_keep == 0);  // the full sequence from step 4 on
  CHECK(seeds.size() == 8);          // micro-batches 0..7 drop, each with its own draw
}
