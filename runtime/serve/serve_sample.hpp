#pragma once
// A serving engine's figures as plain numbers, sampled over time (the console's server charts,
// issue 11). An engine_snapshot is a copy of engine_stats (runtime/serve/engine_core.hpp) at one
// moment: cumulative counters, gauges and the histograms' cumulative bucket counts. Two of them,
// taken `seconds` apart, give one window's figures (window_of): rates and counts from the
// counters' differences, percentiles from the histograms' differences (as Prometheus'
// histogram_quantile over a rate), gauges as they are at the end of the window.
// Nothing here knows about files, threads or the engine: serve_recorder writes these figures to
// metrics.jsonl, completion_backend::snapshot() gives them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace zf::serve {

// Cumulative histogram counts, Prometheus style: counts[i] = observations <= bounds[i], the last
// one (counts.size() == bounds.size() + 1) is +Inf, i.e. every observation (== total).
struct histogram_snapshot {
  std::vector<double> bounds;  // upper bounds, increasing (seconds for the engine's timings)
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t total = 0;
};

// The finish reasons counted in engine_snapshot::finished (indexed by serve::finish_reason: 0 is
// none, never counted, then stop, length, cancelled, error).
inline constexpr int num_finish_reasons = 5;

struct engine_snapshot {
  // gauges: now
  int waiting = 0, running = 0, blocks_used = 0, blocks_total = 0;
  uint64_t weights_version = 0;
  // counters: since the engine started
  uint64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  uint64_t cache_queries = 0, cache_hits = 0;  // prefix cache, in prompt tokens
  uint64_t finished[num_finish_reasons] = {};  // choices, by finish_reason
  uint64_t weight_updates = 0;
  histogram_snapshot ttft, tpot;  // time to first token, time per output token (seconds)
};

// Several engines as one (backend_pool): gauges and counters summed, histograms summed bucket by
// bucket (a histogram whose bounds differ from the first's is left out), weights_version the
// oldest served. Empty input: a zero snapshot.
engine_snapshot merge(const std::vector<engine_snapshot>& parts);

// The q-quantile (0 < q < 1) of a histogram's observations, as Prometheus' histogram_quantile:
// the bucket holding rank q * total, linearly interpolated between its lower bound (the
// previous bucket's upper bound, 0 for the first) and its upper bound; a rank in the +Inf bucket
// gives the largest finite bound. nullopt when the histogram holds no observation or its counts
// are malformed (sizes, decreasing counts).
std::optional<double> histogram_quantile(const histogram_snapshot& h, double q);

// One window's figures. Optional ones are absent when the window cannot say (no prefix-cache
// query, no observation in a histogram, a window of no length).
struct window_figures {
  int queue_depth = 0, running = 0, kv_blocks_used = 0, kv_blocks_total = 0;
  std::optional<double> prefix_hit_rate;  // cache hits / queries in the window
  std::optional<double> ttft_p50_ms, ttft_p90_ms, ttft_p99_ms, tpot_p50_ms, tpot_p99_ms;
  std::optional<double> tokens_per_s, prompt_tokens_per_s;  // over the window's seconds
  uint64_t requests[num_finish_reasons] = {};  // choices finished in the window, by reason
  uint64_t preemptions = 0;
  uint64_t weights_version = 0;
};

// The window from prev to cur, `seconds` long (> 0, else the rates are absent). A counter that
// went down (another engine behind the same backend) counts from zero: its current value.
window_figures window_of(const engine_snapshot& prev, const engine_snapshot& cur, double seconds);

// The figures as JSON object members, no braces: "queue_depth":1,"running":2,... in a fixed
// order, absent optionals and non-finite numbers left out; requests as requests_stop,
// requests_length, requests_cancelled, requests_error.
std::string json_members(const window_figures& f);

}  // namespace zf::serve
