#pragma once
// What a run's data-efficiency settings (issue 13) ask for at each optimizer step, as a pure
// function of the step: the shape of each rank's micro-batch (seqlen curriculum), the difficulty
// of the sample pool (vocab_rarity or custom curriculum) and the tokens random-LTD's layers keep.
// The data source shapes batches by it, the train loop counts tokens and layer-tokens and decays
// the learning rate by it; a resumed run asks the same questions and gets the same answers, so
// nothing but the step is needed to resume the schedule exactly.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/train/curriculum.hpp"

namespace zf {

// One optimizer step's data, per rank and micro-batch.
struct step_plan {
  int rows = 0, t = 0;       // rows windows of t tokens (b x seq_len without a seqlen curriculum)
  int seqlen = 0;            // the seqlen curriculum's difficulty (0: none)
  int pool_difficulty = -1;  // the pool curriculum's difficulty (-1: none; every window)
  int ltd_keep = 0;          // tokens random-LTD's layers keep (0: no dropping at this step)
};

class data_schedule {
 public:
  // zf::error naming the key (data.curriculum.<metric>.*, train.random_ltd.*) for settings that
  // cannot be followed: pacing out of order, a seqlen above train.seq_len, two pool metrics, a
  // layer id out of range.
  // global_ranks: the data-parallel ranks the step's tokens are counted over.
  explicit data_schedule(const run_config& c, int global_ranks = 1);

  step_plan at(int64_t step) const;
  // Whether any setting changes the plain run (false: every step is b x seq_len, no dropping).
  bool active() const { return seqlen_ || pool_ || ltd_; }

  // The pool curriculum: "vocab_rarity" or "custom" ("" when none), by value or percentile.
  const std::string& pool_metric() const { return pool_metric_; }
  bool pool_percentile() const { return pool_percentile_; }
  int pool_max_difficulty() const { return pool_ ? pool_->max_difficulty : 0; }
  const std::vector<int>& ltd_layers() const { return ltd_layer_ids_; }

  // Tokens and layer-tokens (tokens times the layers that processed them) one step trains on,
  // over `ranks` global ranks and grad_accum micro-batches.
  int64_t step_tokens(int64_t step) const;
  int64_t step_layer_tokens(int64_t step) const;
  // The same summed over steps [0, step): what a run has consumed when it starts `step`.
  int64_t tokens_before(int64_t step) const;
  int64_t layer_tokens_before(int64_t step) const;

  // The learning rate at 0-based `step`, which starts with `tokens` and `layer_tokens`
  // consumed: warm-up over schedule.warmup steps, then cosine to min_lr_ratio by what
  // schedule.decay_by counts: steps (of train.steps), tokens (of train.tokens, or train.steps
  // full steps' worth) or layer-tokens (of that total times model.n_layer), measured from the
  // end of the warm-up.
  double lr_at(int64_t step, int64_t tokens, int64_t layer_tokens) const;
  // The cosine's total for decay_by = tokens and layer_tokens.
  int64_t total_tokens() const;
  int64_t total_layer_tokens() const;

 private:
  run_config c_;
  int ranks_ = 1;  // global ranks (train.ranks or the process group's, set by the caller)
  std::optional<pacing_config> seqlen_, pool_;
  std::string pool_metric_;
  bool pool_percentile_ = false;
  std::optional<ltd_schedule> ltd_;
  std::vector<int> ltd_layer_ids_;
  int64_t warmup_tokens_ = 0, warmup_layer_tokens_ = 0;
};

}  // namespace zf
