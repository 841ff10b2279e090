#include "runtime/train/curriculum.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "runtime/core/error.hpp"

namespace zf {

namespace {

// x^r for a small integer r, by multiplication so integer values stay exact up to 2^64.
long double ipow(long double x, int r) {
  long double out = 1;
  for (int i = 0; i < r; ++i) out *= x;
  return out;
}

// floor((step / total)^(1/r) * range) for 0 <= step < total, range >= 0: the largest k in
// 0..range with k^r * total <= step * range^r. The double estimate is corrected by that integer
// test, so an exact product such as 0.57 * 100 floors to 57 rather than 56.
std::int64_t root_floor(std::int64_t step, std::int64_t total, int r, std::int64_t range) {
  const double x = std::pow(double(step) / double(total), 1.0 / r) * double(range);
  std::int64_t k = std::clamp<std::int64_t>(std::int64_t(std::floor(x)), 0, range);
  const long double rhs = (long double)step * ipow((long double)range, r);
  auto fits = [&](std::int64_t v) { return ipow((long double)v, r) * (long double)total <= rhs; };
  while (k < range && fits(k + 1)) ++k;
  while (k > 0 && !fits(k)) --k;
  return k;
}

// DeepSpeed's fixed_root value at `step`: min..max over `total` steps, in multiples of `mult`.
int root_value(int lo, int hi, std::int64_t total, int mult, int r, std::int64_t step) {
  step = std::max<std::int64_t>(step, 0);
  if (step >= total) return hi;
  std::int64_t d = lo + root_floor(step, total, r, std::int64_t(hi) - lo);
  d -= d % mult;
  return int(std::min<std::int64_t>(d, hi));
}

void validate_discrete(const pacing_config& c) {
  if (c.difficulties.empty())
    fail("{}.difficulties: fixed_discrete needs at least one difficulty", c.key);
  if (c.max_steps.size() + 1 != c.difficulties.size())
    fail(
        "{}.max_steps: must have one element fewer than difficulties (the last "
        "difficulty holds after the last max step); got {} max steps for {} difficulties",
        c.key, c.max_steps.size(), c.difficulties.size());
  for (std::size_t i = 0; i < c.difficulties.size(); ++i) {
    const int d = c.difficulties[i];
    if (d < c.min_difficulty || d > c.max_difficulty)
      fail(
          "{}.difficulties: {} (element {}) is outside min_difficulty.."
          "max_difficulty ({}..{})",
          c.key, d, i, c.min_difficulty, c.max_difficulty);
    if (i > 0 && d <= c.difficulties[i - 1])
      fail("{}.difficulties: must increase, got {} after {} (element {})", c.key, d,
           c.difficulties[i - 1], i);
  }
  for (std::size_t i = 0; i < c.max_steps.size(); ++i) {
    if (c.max_steps[i] < 0)
      fail("{}.max_steps: must not be negative, got {} (element {})", c.key, c.max_steps[i], i);
    if (i > 0 && c.max_steps[i] <= c.max_steps[i - 1])
      fail("{}.max_steps: must increase, got {} after {} (element {})", c.key, c.max_steps[i],
           c.max_steps[i - 1], i);
  }
}

}  // namespace

pacing_kind parse_pacing_kind(std::string_view name) {
  if (name == "fixed_linear") return pacing_kind::fixed_linear;
  if (name == "fixed_root") return pacing_kind::fixed_root;
  if (name == "fixed_discrete") return pacing_kind::fixed_discrete;
  fail(
      "data.curriculum.pacing: unknown pacing '{}' (expected fixed_linear, fixed_root or "
      "fixed_discrete)",
      name);
}

std::string_view pacing_kind_name(pacing_kind kind) {
  switch (kind) {
    case pacing_kind::fixed_linear:
      return "fixed_linear";
    case pacing_kind::fixed_root:
      return "fixed_root";
    case pacing_kind::fixed_discrete:
      return "fixed_discrete";
  }
  return "unknown";
}

void pacing_config::validate() const {
  if (kind != pacing_kind::fixed_linear && kind != pacing_kind::fixed_root &&
      kind != pacing_kind::fixed_discrete)
    fail("{}.pacing: unknown pacing (value {})", key, int(kind));
  if (min_difficulty > max_difficulty)
    fail("{}.min_difficulty: must not exceed max_difficulty (got {} > {})", key, min_difficulty,
         max_difficulty);
  if (kind == pacing_kind::fixed_discrete) return validate_discrete(*this);
  if (total_steps < 1) fail("{}.total_steps: must be at least 1, got {}", key, total_steps);
  if (difficulty_step < 1)
    fail("{}.difficulty_step: must be at least 1, got {}", key, difficulty_step);
  // A min that is not a multiple would round below itself at the first steps (DeepSpeed gives
  // 96 for min 100, step 16): refused rather than served below the minimum.
  if (min_difficulty % difficulty_step != 0)
    fail("{}.min_difficulty: must be a multiple of difficulty_step (got {}, step {})", key,
         min_difficulty, difficulty_step);
  if (kind == pacing_kind::fixed_root && root_degree < 1)
    fail("{}.root_degree: must be at least 1, got {}", key, root_degree);
}

int difficulty_at(const pacing_config& cfg, std::int64_t step) {
  switch (cfg.kind) {
    case pacing_kind::fixed_discrete:
      for (std::size_t i = 0; i < cfg.max_steps.size(); ++i)
        if (step <= cfg.max_steps[i]) return cfg.difficulties[i];
      return cfg.difficulties.back();
    case pacing_kind::fixed_root:
      return root_value(cfg.min_difficulty, cfg.max_difficulty, cfg.total_steps,
                        cfg.difficulty_step, cfg.root_degree, step);
    case pacing_kind::fixed_linear:
      break;
  }
  return root_value(cfg.min_difficulty, cfg.max_difficulty, cfg.total_steps, cfg.difficulty_step, 1,
                    step);
}

std::int64_t percentile_pool_size(std::int64_t n_samples, int percentile, int max_percentile) {
  if (max_percentile < 1)
    fail(
        "data.curriculum.max_difficulty: a percentile curriculum needs max_difficulty >= 1 (the "
        "100th percentile), got {}",
        max_percentile);
  if (percentile < 0 || percentile > max_percentile)
    fail("data.curriculum: percentile difficulty {} is outside 0..{}", percentile, max_percentile);
  if (percentile == max_percentile) return n_samples;
  return n_samples / max_percentile * percentile;
}

double percentile_threshold(const std::vector<double>& sorted_values, int percentile,
                            int max_percentile) {
  const std::int64_t pool =
      percentile_pool_size(std::int64_t(sorted_values.size()), percentile, max_percentile);
  if (pool == 0) return -std::numeric_limits<double>::infinity();
  return sorted_values[std::size_t(pool - 1)];
}

void ltd_schedule::validate() const {
  if (min_value < 1) fail("train.random_ltd.min_tokens: must be at least 1, got {}", min_value);
  if (min_value > max_value)
    fail("train.random_ltd.min_tokens: must not exceed the sequence length (got {} > {})",
         min_value, max_value);
  if (require_steps < 1)
    fail("train.random_ltd.total_steps: must be at least 1, got {}", require_steps);
  if (seq_per_step < 1)
    fail("train.random_ltd.step_size: must be at least 1, got {}", seq_per_step);
  if (min_value % seq_per_step != 0)
    fail("train.random_ltd.min_tokens: must be a multiple of step_size (got {}, step {})",
         min_value, seq_per_step);
}

int kept_tokens_at(const ltd_schedule& s, std::int64_t step) {
  return root_value(s.min_value, s.max_value, s.require_steps, s.seq_per_step, 1, step);
}

std::vector<int> ltd_layers(int n_layer, const std::vector<int>& layers) {
  if (layers.empty()) {
    std::vector<int> out;
    for (int l = 1; l + 1 < n_layer; ++l) out.push_back(l);
    return out;
  }
  std::set<int> seen;
  for (int l : layers) {
    if (l < 0 || l >= n_layer)
      fail("train.random_ltd.layers: layer {} is out of range (model.n_layer = {}, ids 0..{})", l,
           n_layer, n_layer - 1);
    if (!seen.insert(l).second) fail("train.random_ltd.layers: layer {} is listed twice", l);
  }
  return {seen.begin(), seen.end()};
}

}  // namespace zf
