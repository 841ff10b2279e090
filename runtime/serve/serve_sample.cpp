#include "runtime/serve/serve_sample.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "runtime/serve/serving.hpp"

namespace zf::serve {
namespace {

// A counter's growth over the window; one that went down restarted (counts from zero).
uint64_t grown(uint64_t prev, uint64_t cur) {
  return cur >= prev ? cur - prev : cur;
}

bool well_formed(const histogram_snapshot& h) {
  if (h.counts.size() != h.bounds.size() + 1) return false;
  for (std::size_t i = 1; i < h.counts.size(); ++i)
    if (h.counts[i] < h.counts[i - 1]) return false;
  return true;
}

// The window's observations: cur - prev bucket by bucket; all of cur when prev does not fit
// (other bounds) or some count went down (a restart).
histogram_snapshot grown(const histogram_snapshot& prev, const histogram_snapshot& cur) {
  if (prev.bounds != cur.bounds || prev.counts.size() != cur.counts.size()) return cur;
  histogram_snapshot d{cur.bounds, cur.counts, cur.sum - prev.sum, 0};
  for (std::size_t i = 0; i < cur.counts.size(); ++i) {
    if (cur.counts[i] < prev.counts[i]) return cur;
    d.counts[i] = cur.counts[i] - prev.counts[i];
  }
  if (cur.total < prev.total) return cur;
  d.total = cur.total - prev.total;
  return d;
}

std::optional<double> ms(std::optional<double> seconds) {
  if (!seconds) return std::nullopt;
  return *seconds * 1000.0;
}

std::optional<double> rate(uint64_t n, double seconds) {
  if (!(seconds > 0)) return std::nullopt;
  return static_cast<double>(n) / seconds;
}

void add_histogram(histogram_snapshot& into, const histogram_snapshot& h) {
  if (into.bounds != h.bounds || into.counts.size() != h.counts.size()) return;
  for (std::size_t i = 0; i < h.counts.size(); ++i) into.counts[i] += h.counts[i];
  into.sum += h.sum;
  into.total += h.total;
}

}  // namespace

engine_snapshot merge(const std::vector<engine_snapshot>& parts) {
  if (parts.empty()) return {};
  engine_snapshot m = parts[0];
  for (std::size_t k = 1; k < parts.size(); ++k) {
    const engine_snapshot& p = parts[k];
    m.waiting += p.waiting, m.running += p.running;
    m.blocks_used += p.blocks_used, m.blocks_total += p.blocks_total;
    m.weights_version = std::min(m.weights_version, p.weights_version);
    m.prompt_tokens += p.prompt_tokens, m.generated_tokens += p.generated_tokens;
    m.steps += p.steps, m.preemptions += p.preemptions;
    m.cache_queries += p.cache_queries, m.cache_hits += p.cache_hits;
    for (int r = 0; r < num_finish_reasons; ++r) m.finished[r] += p.finished[r];
    m.weight_updates += p.weight_updates;
    add_histogram(m.ttft, p.ttft);
    add_histogram(m.tpot, p.tpot);
  }
  return m;
}

std::optional<double> histogram_quantile(const histogram_snapshot& h, double q) {
  if (!well_formed(h) || h.bounds.empty() || !(q > 0 && q < 1)) return std::nullopt;
  const uint64_t total = h.counts.back();
  if (total == 0) return std::nullopt;
  const double rank = q * static_cast<double>(total);
  // the first bucket whose cumulative count reaches the rank (rank > 0, so it holds some)
  std::size_t b = 0;
  while (b < h.bounds.size() && static_cast<double>(h.counts[b]) < rank) ++b;
  if (b == h.bounds.size()) return h.bounds.back();  // +Inf bucket: the largest finite bound
  const double lo = b == 0 ? 0.0 : h.bounds[b - 1], hi = h.bounds[b];
  if (b == 0 && hi <= 0) return hi;  // Prometheus: no lower bound to interpolate from
  const double below = b == 0 ? 0.0 : static_cast<double>(h.counts[b - 1]);
  const double in_bucket = static_cast<double>(h.counts[b]) - below;
  return lo + (hi - lo) * (rank - below) / in_bucket;
}

window_figures window_of(const engine_snapshot& prev, const engine_snapshot& cur, double seconds) {
  window_figures f;
  f.queue_depth = cur.waiting;
  f.running = cur.running;
  f.kv_blocks_used = cur.blocks_used;
  f.kv_blocks_total = cur.blocks_total;
  f.weights_version = cur.weights_version;
  const uint64_t queries = grown(prev.cache_queries, cur.cache_queries);
  if (queries > 0) {  // hits never exceed queries, within one engine's counters
    const uint64_t hits = std::min(grown(prev.cache_hits, cur.cache_hits), queries);
    f.prefix_hit_rate = static_cast<double>(hits) / static_cast<double>(queries);
  }
  const histogram_snapshot ttft = grown(prev.ttft, cur.ttft), tpot = grown(prev.tpot, cur.tpot);
  f.ttft_p50_ms = ms(histogram_quantile(ttft, 0.50));
  f.ttft_p90_ms = ms(histogram_quantile(ttft, 0.90));
  f.ttft_p99_ms = ms(histogram_quantile(ttft, 0.99));
  f.tpot_p50_ms = ms(histogram_quantile(tpot, 0.50));
  f.tpot_p99_ms = ms(histogram_quantile(tpot, 0.99));
  f.tokens_per_s = rate(grown(prev.generated_tokens, cur.generated_tokens), seconds);
  f.prompt_tokens_per_s = rate(grown(prev.prompt_tokens, cur.prompt_tokens), seconds);
  for (int r = 0; r < num_finish_reasons; ++r)
    f.requests[r] = grown(prev.finished[r], cur.finished[r]);
  f.preemptions = grown(prev.preemptions, cur.preemptions);
  return f;
}

std::string json_members(const window_figures& f) {
  std::string o;
  auto put = [&o](const char* key, auto v) {
    o += fmt::format("{}\"{}\":{}", o.empty() ? "" : ",", key, v);
  };
  auto put_opt = [&](const char* key, const std::optional<double>& v) {
    if (v && std::isfinite(*v)) put(key, *v);  // JSON has no NaN or Infinity: left out
  };
  put("queue_depth", f.queue_depth);
  put("running", f.running);
  put("kv_blocks_used", f.kv_blocks_used);
  put("kv_blocks_total", f.kv_blocks_total);
  put_opt("prefix_hit_rate", f.prefix_hit_rate);
  put_opt("ttft_p50_ms", f.ttft_p50_ms);
  put_opt("ttft_p90_ms", f.ttft_p90_ms);
  put_opt("ttft_p99_ms", f.ttft_p99_ms);
  put_opt("tpot_p50_ms", f.tpot_p50_ms);
  put_opt("tpot_p99_ms", f.tpot_p99_ms);
  put_opt("tokens_per_s", f.tokens_per_s);
  put_opt("prompt_tokens_per_s", f.prompt_tokens_per_s);
  for (int r = 1; r < num_finish_reasons; ++r)
    put(fmt::format("requests_{}", to_string(static_cast<finish_reason>(r))).c_str(),
        f.requests[r]);
  put("preemptions", f.preemptions);
  put("weights_version", f.weights_version);
  return o;
}

}  // namespace zf::serve
