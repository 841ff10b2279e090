// bench_serve's calibration: solo latencies on a separate engine (the scale of the SLA) and the
// saturation throughput of a workload's mix from a burst (the offered load is a fraction of it).
// The driver measures that capacity again after the runs to tell a disturbed calibration.
#include <algorithm>

#include "bench/serve_load.hpp"

namespace zf::bench_serve {

double calibration::prefill_ms(int len) const {
  const auto& p = prefill;
  if (p.size() == 1) return p[0].second;
  std::size_t i = 1;
  while (i + 1 < p.size() && p[i].first < len) ++i;
  auto [x0, y0] = p[i - 1];
  auto [x1, y1] = p[i];
  return std::max(0.0, y0 + (y1 - y0) * double(len - x0) / double(x1 - x0));
}

// Median TPOT of `batch` requests (prompt 16, 33 tokens) submitted together.
static double batch_tpot_ms(completion_backend& be, std::mt19937_64& g, int batch, int vocab) {
  std::vector<request_spec> r(batch);
  for (auto& x : r) x.req = make_request(g, 16, 33, vocab);
  auto o = drive(be, std::move(r), 0, 300);
  std::vector<double> v;
  for (auto& x : o.recs())
    if (x.tokens > 1) v.push_back(msec(x.finish - x.first) / (x.tokens - 1));
  return median(v);
}

variant capacity_variant(const options& o, bool batch_invariant) {
  // With --policy cache the capacity is the uncached engine's, so that the offered load is one
  // both variants can sustain (the cached one sustains several times more on `prefix`).
  return variant{policy_kind::split_fuse, o.policy != "cache", batch_invariant};
}

double burst_capacity(const model_setup& ms, const options& o, const workload_spec& w,
                      const variant& v, int* burst_size) {
  // A burst of 1.5 x max_seqs requests (lengths drawn from the workload, a seed of its own)
  // submitted at once; completions per second between the first 1/6 and the last 1/6 of the
  // finishes (steady state: no ramp-up, no lone tail).
  auto be = make_backend(ms, o, v, 256);
  std::mt19937_64 g(o.seed ^ 0xb0057ULL);
  solo_ttft_ms(*be, g, 64, 1, ms.cfg.vocab_size);  // warm-up (thread pool, KV pool pages)
  const int m = std::max(12, o.max_seqs + o.max_seqs / 2);
  if (burst_size) *burst_size = m;
  auto burst = make_requests(w, m, 0, o.seed + 0x9e3779b9ULL, ms.cfg.vocab_size);
  auto out = drive(*be, std::move(burst), 0, 600);
  std::vector<clk::time_point> fin;
  for (auto& r : out.recs())
    if (r.done && r.status == 200) fin.push_back(r.finish);
  std::sort(fin.begin(), fin.end());
  const int a = int(fin.size()) / 6, b = int(fin.size()) - 1 - int(fin.size()) / 6;
  return b > a ? (b - a) / std::max(secs(fin[b] - fin[a]), 1e-9) : 0.0;
}

calibration calibrate(const model_setup& ms, const options& o, const workload_spec& w,
                      bool with_capacity) {
  // static_batch prefills a whole prompt in one forward pass: the plain solo prefill cost.
  auto be = make_backend(ms, o, {policy_kind::static_batch, true, o.batch_invariant}, 256);
  std::mt19937_64 g(o.seed ^ 0x5eedca11b4a7e5ULL);
  const int vocab = ms.cfg.vocab_size;
  solo_ttft_ms(*be, g, 64, 2, vocab);  // warm-up (thread pool, first-touch of the KV pool)
  batch_tpot_ms(*be, g, 2, vocab);
  calibration c;
  const int S = w.shared_prefix;  // solo prefill: the whole prompt, nothing cached
  std::vector<int> lens{16, S + w.prompt.lo, S + int(w.prompt.mean), S + w.prompt.hi, o.budget};
  std::sort(lens.begin(), lens.end());
  lens.erase(std::unique(lens.begin(), lens.end()), lens.end());
  for (int len : lens) {
    if (len + 1 > ms.cfg.n_positions) continue;
    double t = solo_ttft_ms(*be, g, len, 3, vocab);
    c.prefill.emplace_back(len, t);
    if (len == o.budget) c.t_budget_ms = t;
  }
  c.tpot_solo_ms = batch_tpot_ms(*be, g, 1, vocab);
  be.reset();
  if (with_capacity) {
    c.capacity_rps = burst_capacity(ms, o, w, capacity_variant(o, o.batch_invariant), &c.burst);
    // Right after the default burst, so that both see the same machine: the throughput cost
    // of batch invariance is their ratio.
    if (o.invariant_cost)
      c.capacity_invariant_rps = burst_capacity(ms, o, w, capacity_variant(o, true));
  }
  if (c.t_budget_ms <= 0) c.t_budget_ms = c.prefill_ms(o.budget);
  return c;
}

}  // namespace zf::bench_serve
