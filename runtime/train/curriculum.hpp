#pragma once
// Data efficiency schedules (issue 13) as plain functions of the step: the curriculum's pacing
// (DeepSpeed's fixed_linear, fixed_root, fixed_discrete), the percentile-to-pool mapping, and the
// random-LTD kept-token schedule with the layers it applies to. Stateless on purpose: the sampler
// and trainer ask for the value at a step, so a resumed run gets the same values as an
// uninterrupted one without saving any schedule state.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zf {

enum class pacing_kind { fixed_linear, fixed_root, fixed_discrete };

// "fixed_linear" | "fixed_root" | "fixed_discrete"; anything else is a zf::error naming
// data.curriculum.pacing and the accepted names.
pacing_kind parse_pacing_kind(std::string_view name);
std::string_view pacing_kind_name(pacing_kind kind);

// One metric's pacing (`data.curriculum.*`). fixed_linear / fixed_root use min..max over
// total_steps in multiples of difficulty_step (root_degree only for fixed_root); fixed_discrete
// uses difficulties[i] up to and including step max_steps[i], the last difficulty after the last
// max step (so max_steps has one element fewer than difficulties, as in DeepSpeed).
struct pacing_config {
  pacing_kind kind = pacing_kind::fixed_linear;
  int min_difficulty = 0;
  int max_difficulty = 0;
  std::int64_t total_steps = 1;
  int difficulty_step = 1;
  int root_degree = 1;
  std::vector<int> difficulties;
  std::vector<std::int64_t> max_steps;
  std::string key = "data.curriculum";  // the config table errors name (data.curriculum.seqlen)

  // zf::error naming `<key>.<field>`, what is expected and the value found.
  void validate() const;
};

// The difficulty at `step` (steps count from 0; a negative step reads as 0). For the root
// kinds: d = floor((step / total_steps)^(1/r) * (max - min) + min), d -= d % difficulty_step,
// min(d, max); step >= total_steps gives max (DeepSpeed keeps max once reached). The floor is
// exact (integer check), where DeepSpeed's float can land one below (0.57 * 100 -> 56.99...).
// cfg must be valid.
int difficulty_at(const pacing_config& cfg, std::int64_t step);

// difficulty_type = percentile, as DeepSpeed's sampler reads it: of n_samples sorted by metric,
// the easiest (n_samples / max_percentile) * percentile form the pool (integer division), all of
// them at percentile == max_percentile. zf::error naming data.curriculum.max_difficulty when
// max_percentile < 1, or the percentile when it is outside 0..max_percentile.
std::int64_t percentile_pool_size(std::int64_t n_samples, int percentile, int max_percentile = 100);

// The metric value at the pool's edge: sorted_values[pool - 1] for the pool above (ascending
// values, one a sample), -infinity for an empty pool. Samples with a value up to it are in the
// pool, except ties beyond the pool's count (the sampler takes the count, this is for display).
double percentile_threshold(const std::vector<double>& sorted_values, int percentile,
                            int max_percentile = 100);

// random-LTD (arXiv 2211.11586), `train.random_ltd.*`: tokens each dropping layer keeps, from
// min_value to max_value (the sequence length) linearly over require_steps, in multiples of
// seq_per_step (DeepSpeed's fixed_linear random-LTD schedule).
struct ltd_schedule {
  int min_value = 1;
  int max_value = 1;
  std::int64_t require_steps = 1;
  int seq_per_step = 1;

  // zf::error naming `train.random_ltd.<key>`.
  void validate() const;
};

// Kept tokens at `step`: the fixed_linear formula above with min_value, max_value, require_steps
// and seq_per_step. s must be valid.
int kept_tokens_at(const ltd_schedule& s, std::int64_t step);

// The layers random-LTD applies to, ascending: `layers` when given (every id in 0..n_layer-1,
// none twice, else zf::error naming train.random_ltd.layers), else all but the first and the last
// (none for n_layer <= 2): they keep the full sequence so the embedding and the head see every
// token, as in the paper.
std::vector<int> ltd_layers(int n_layer, const std::vector<int>& layers = {});

}  // namespace zf
