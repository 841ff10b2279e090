#include "storage/train_batches.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "runtime/core/error.hpp"
#include "runtime/core/seed.hpp"

namespace zf::storage {
train_batches::train_batches(std::shared_ptr<const dataset> data,
                             std::shared_ptr<const data_schedule> schedule,
                             std::shared_ptr<const metric_index> pool, uint64_t seed,
                             int batch_size, int grad_accum)
    : data_(std::move(data)),
      schedule_(std::move(schedule)),
      pool_(std::move(pool)),
      seed_(seed),
      batch_(batch_size),
      accum_(std::max(1, grad_accum)) {
  if (!schedule_ || schedule_->pool_metric().empty()) {
    pool_.reset();
    return;
  }
  const std::string key = "data.curriculum." + schedule_->pool_metric();
  if (!pool_) fail("{}: no metric index given (set {}.index)", key, key);
  const step_plan first = schedule_->at(0);
  if (pool_size(first.pool_difficulty) == 0)
    fail(
        "{}.min_difficulty: the pool at step 0 (difficulty {}) holds no sample; the easiest of the "
        "{} samples has {} {}",
        key, first.pool_difficulty, pool_->size(), pool_->metric(),
        pool_->size() ? pool_->value(pool_->order(0)) : 0.0);
}

int64_t train_batches::pool_size(int difficulty) const {
  if (!pool_) return -1;
  const int64_t n = int64_t(pool_->size());
  if (schedule_->pool_percentile())
    return percentile_pool_size(n, difficulty, std::max(1, schedule_->pool_max_difficulty()));
  // value: the samples whose value is at most the difficulty (the order is ascending)
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pool_->value(pool_->order(std::size_t(mid))) <= double(difficulty))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

void train_batches::fill_train(int64_t micro, int rank, batch& out) const {
  out.route_seed = splitmix64(splitmix64(seed_ ^ 0x726f757465ull) + uint64_t(micro));
  if (!schedule_ || !schedule_->active()) {  // the plain run's batches
    data_->fill_train_rows(seed_, micro, rank * batch_, batch_, out);
    return;
  }
  const step_plan p = schedule_->at(micro / accum_);
  out.index = micro;
  out.b = p.rows;
  out.t = p.t;
  out.inputs.resize(std::size_t(p.rows) * p.t);
  out.targets.resize(std::size_t(p.rows) * p.t);
  const int64_t pool = pool_ ? pool_size(p.pool_difficulty) : -1;
  const int T = data_->seq_len();
  for (int r = 0; r < p.rows; ++r) {
    const int64_t row = int64_t(rank) * p.rows + r;
    std::size_t start;
    if (pool > 0) {  // a sample of the pool: its first t tokens
      std::seed_seq seq{uint32_t(seed_),       uint32_t(seed_ >> 32), uint32_t(micro),
                        uint32_t(micro >> 32), uint32_t(row),         0x706f6f6cu};
      std::mt19937_64 rng(seq);
      std::uniform_int_distribution<int64_t> pick(0, pool - 1);
      start = std::size_t(pool_->order(std::size_t(pick(rng)))) * std::size_t(T);
    } else {
      start = data_->random_start(seed_, micro, row, p.t);
    }
    data_->fill_window(start, p.t, r, out);
  }
  out.ltd_keep = p.ltd_keep;
  out.ltd_seed = p.ltd_keep ? splitmix64(splitmix64(seed_ ^ uint64_t(micro)) + uint64_t(rank)) : 0;
}

std::shared_ptr<const metric_index> open_pool_index(const data_schedule& schedule,
                                                    const curriculum_config& cur,
                                                    const std::filesystem::path& shard_path,
                                                    const dataset& data,
                                                    const std::filesystem::path& data_dir) {
  const std::string& metric = schedule.pool_metric();
  if (metric.empty()) return nullptr;
  const metric_curriculum& m = metric == "custom" ? cur.custom : cur.vocab_rarity;
  const std::string key = "data.curriculum." + metric + ".index";
  const auto shard = token_shard::open(shard_path);
  const int T = data.seq_len();
  if (!m.index.empty()) {
    try {
      return std::make_shared<const metric_index>(
          metric_index::open(m.index, metric, shard, data.train_tokens(), T));
    } catch (const error& e) {
      fail("{}: {}", key, e.what());
    }
  }
  if (metric == "custom")
    fail(
        "{}: set it to the folder `zeroflow data analyze --metric custom --values FILE --out DIR` "
        "wrote",
        key);
  // vocab_rarity: cheap to compute (one pass), so built on first use and kept by fingerprint
  const std::filesystem::path dir =
      data_dir / "cache" /
      fmt::format("index-{}-{}-t{}", shard_path.stem().string(), data.train_tokens(), T);
  try {
    return std::make_shared<const metric_index>(
        metric_index::open(dir, metric, shard, data.train_tokens(), T));
  } catch (const error&) {  // missing or stale: rebuilt
  }
  const auto values = vocab_rarity(shard, data.train_tokens(), T);
  write_metric_index(dir, metric, shard, data.train_tokens(), T, values);
  return std::make_shared<const metric_index>(
      metric_index::open(dir, metric, shard, data.train_tokens(), T));
}

}  // namespace zf::storage
