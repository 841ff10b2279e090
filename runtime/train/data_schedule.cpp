#include "runtime/train/data_schedule.hpp"

#include <algorithm>
#include <cmath>

#include "runtime/core/error.hpp"
#include "runtime/train/optim.hpp"

namespace zf {
namespace {

// One metric's config as a pacing (runtime/train/curriculum), validated with its key in errors.
pacing_config pacing_of(const metric_curriculum& m, const std::string& key) {
  pacing_config p;
  p.key = key;
  p.kind = parse_pacing_kind(m.pacing);
  p.min_difficulty = m.min_difficulty;
  p.max_difficulty = m.max_difficulty;
  p.total_steps = m.total_steps;
  p.difficulty_step = m.difficulty_step;
  p.root_degree = m.root_degree;
  for (int64_t d : m.difficulties) {
    if (d < INT32_MIN || d > INT32_MAX) fail("{}.difficulties: {} is out of range", key, d);
    p.difficulties.push_back(int(d));
  }
  p.max_steps = m.max_steps;
  p.validate();
  return p;
}

}  // namespace

data_schedule::data_schedule(const run_config& c, int global_ranks)
    : c_(c), ranks_(std::max(1, global_ranks)) {
  const auto& cur = c.data.curriculum;
  const int T = c.train.seq_len;
  if (cur.seqlen.enabled) {
    metric_curriculum m = cur.seqlen;
    if (m.max_difficulty == 0) m.max_difficulty = T;
    if (m.difficulty_type != "value")
      fail("data.curriculum.seqlen.difficulty_type: the sequence length is a value, got \"{}\"",
           m.difficulty_type);
    seqlen_ = pacing_of(m, "data.curriculum.seqlen");
    if (seqlen_->min_difficulty < 1)
      fail("data.curriculum.seqlen.min_difficulty: must be at least 1, got {}",
           seqlen_->min_difficulty);
    if (seqlen_->max_difficulty > T)
      fail("data.curriculum.seqlen.max_difficulty: must not exceed train.seq_len ({}), got {}", T,
           seqlen_->max_difficulty);
    if (cur.seqlen_mode != "truncate" && cur.seqlen_mode != "reshape")
      fail("data.curriculum.seqlen_mode: expected truncate or reshape, got \"{}\"",
           cur.seqlen_mode);
  }
  if (cur.vocab_rarity.enabled && cur.custom.enabled)
    fail(
        "data.curriculum.custom: one pool metric at a time (data.curriculum.vocab_rarity is "
        "enabled too)");
  for (const auto& [m, name] :
       {std::pair{&cur.vocab_rarity, "vocab_rarity"}, std::pair{&cur.custom, "custom"}}) {
    if (!m->enabled) continue;
    const std::string key = std::string("data.curriculum.") + name;
    if (m->difficulty_type != "value" && m->difficulty_type != "percentile")
      fail("{}.difficulty_type: expected value or percentile, got \"{}\"", key, m->difficulty_type);
    pool_ = pacing_of(*m, key);
    pool_metric_ = name;
    pool_percentile_ = m->difficulty_type == "percentile";
    if (pool_percentile_ && (pool_->max_difficulty > 100 || pool_->min_difficulty < 0))
      fail("{}.max_difficulty: a percentile is 0..100, got {}..{}", key, pool_->min_difficulty,
           pool_->max_difficulty);
  }
  const auto& r = c.train.random_ltd;
  if (r.enabled) {
    ltd_schedule s;
    s.max_value = T;
    s.min_value = r.min_tokens > 0 ? r.min_tokens : std::max(1, T / 2);
    s.seq_per_step = r.step_size;
    s.require_steps = r.total_steps > 0 ? r.total_steps : std::max(1, c.train.steps / 2);
    if (r.min_tokens == 0) s.min_value -= s.min_value % s.seq_per_step;
    if (s.min_value < 1) s.min_value = s.seq_per_step;
    s.validate();
    std::vector<int> layers;
    for (int64_t l : r.layers) layers.push_back(int(std::clamp<int64_t>(l, -1, INT32_MAX)));
    ltd_layer_ids_ = zf::ltd_layers(c.model.n_layer, layers);
    if (ltd_layer_ids_.empty())
      fail(
          "train.random_ltd.layers: no layer to drop tokens in (model.n_layer = {}: the default "
          "keeps the first and last layers whole; list layers explicitly)",
          c.model.n_layer);
    ltd_ = s;
  }
  const int64_t w = std::max(0, c.schedule.warmup);
  for (int64_t s = 0; s < w; ++s) {
    warmup_tokens_ += step_tokens(s);
    warmup_layer_tokens_ += step_layer_tokens(s);
  }
}

step_plan data_schedule::at(int64_t step) const {
  const int b = c_.train.batch_size, T = c_.train.seq_len;
  step_plan p{.rows = b, .t = T};
  if (seqlen_) {
    const int d = difficulty_at(*seqlen_, step);
    p.seqlen = d;
    p.t = d;
    // reshape: the step's b * T tokens in rows of d (whole rows only)
    if (c_.data.curriculum.seqlen_mode == "reshape") p.rows = std::max(1, int(int64_t(b) * T / d));
  }
  if (pool_) p.pool_difficulty = difficulty_at(*pool_, step);
  if (ltd_) {
    const int keep = kept_tokens_at(*ltd_, step);
    if (keep < p.t) p.ltd_keep = keep;  // keeping every token is the plain layer
  }
  return p;
}

int64_t data_schedule::step_tokens(int64_t step) const {
  const step_plan p = at(step);
  return int64_t(p.rows) * p.t * c_.train.grad_accum * ranks_;
}

int64_t data_schedule::step_layer_tokens(int64_t step) const {
  const step_plan p = at(step);
  const int64_t rows = int64_t(p.rows) * c_.train.grad_accum * ranks_;
  int64_t per_row = int64_t(p.t) * c_.model.n_layer;
  if (p.ltd_keep > 0) per_row -= int64_t(p.t - p.ltd_keep) * int64_t(ltd_layer_ids_.size());
  return rows * per_row;
}

int64_t data_schedule::tokens_before(int64_t step) const {
  int64_t sum = 0;
  for (int64_t s = 0; s < step; ++s) sum += step_tokens(s);
  return sum;
}

int64_t data_schedule::layer_tokens_before(int64_t step) const {
  int64_t sum = 0;
  for (int64_t s = 0; s < step; ++s) sum += step_layer_tokens(s);
  return sum;
}

int64_t data_schedule::total_tokens() const {
  if (c_.train.tokens > 0) return c_.train.tokens;
  return int64_t(c_.train.steps) * c_.train.batch_size * c_.train.seq_len * c_.train.grad_accum *
         ranks_;
}

int64_t data_schedule::total_layer_tokens() const {
  return total_tokens() * c_.model.n_layer;
}

double data_schedule::lr_at(int64_t step, int64_t tokens, int64_t layer_tokens) const {
  const auto& sc = c_.schedule;
  if (step < sc.warmup) return warmup_lr(c_.optimizer, sc, int(step));
  if (sc.decay_by == "tokens")
    return cosine_lr(c_.optimizer, sc,
                     double(tokens - warmup_tokens_) /
                         double(std::max<int64_t>(1, total_tokens() - warmup_tokens_)));
  if (sc.decay_by == "layer_tokens")
    return cosine_lr(c_.optimizer, sc,
                     double(layer_tokens - warmup_layer_tokens_) /
                         double(std::max<int64_t>(1, total_layer_tokens() - warmup_layer_tokens_)));
  return zf::lr_at(c_.optimizer, sc, c_.train.steps, int(step));  // steps: the plain schedule
}

}  // namespace zf
