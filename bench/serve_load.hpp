#pragma once
// bench_serve's load generator, statistics and calibration (serve_load.cpp, serve_calibrate.cpp),
// shared with its driver (serve.cpp, whose header comment describes the method).
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "actors/engine.hpp"
#include "runtime/core/config.hpp"
#include "runtime/serve/serving.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::bench_serve {

using clk = std::chrono::steady_clock;
using json = nlohmann::json;
using zf::serve::completion_backend;
using zf::serve::completion_event;
using zf::serve::completion_request;
using zf::serve::finish_reason;
enum class policy_kind { split_fuse, static_batch };  // engine.policy, as bench variants use it

inline double secs(clk::duration d) {
  return std::chrono::duration<double>(d).count();
}
inline double msec(clk::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
double percentile(std::vector<double> v, double p);  // linear interpolation; NaN when empty
inline double median(std::vector<double> v) {
  return percentile(std::move(v), 50);
}
inline json num(double x) {  // JSON has no NaN or inf: null
  return std::isfinite(x) ? json(x) : json(nullptr);
}
// x / y, NaN (printed "-", written null) when y is not a positive finite number: no ratio printed
// by bench_serve may be inf.
inline double ratio(double x, double y) {
  return std::isfinite(x) && std::isfinite(y) && y > 0 ? x / y : std::nan("");
}
double loadavg_1min();  // /proc/loadavg's first field; NaN where unreadable

// ---- options, model, engines ---------------------------------------------------------------

struct options {
  std::string model = "tiny", workload = "long", policy = "both", mode = "load", json_file;
  int requests = 0;      // 0: rate * duration (open loop) or 8 per client (closed loop)
  double duration = 30;  // seconds of arrivals when --requests is 0 (open loop)
  double rate = 0;       // requests/s; 0: load * measured split_fuse saturation throughput
  double load = 0.6;     // at 0.8 the burst estimate proved optimistic: arrivals outran capacity
  int clients = 0;       // > 0: closed loop
  int budget = 256, max_seqs = 32, block_size = 16, num_blocks = 0, threads = 2;
  bool prefix_caching = true;    // --mode single always runs without it (it measures compute)
  bool batch_invariant = false;  // every engine under engine.batch_invariant
  bool invariant_cost = false;   // load: also split_fuse under batch_invariant, and its capacity
  std::string dtypes;            // load: split_fuse once per engine.dtype listed (comma-separated)
  uint64_t seed = 1;
  double timeout = 0;  // per policy run, seconds; 0: max(120, 5 * arrival span)
  double ttft_factor = 4, ttft_steps = 2, tpot_steps = 2;  // SLA (see serve.cpp's header)
  double disturbed_above = 0.2;  // capacity estimates further apart than this: a warning
  int single_prompt = 256, single_tokens = 64, single_runs = 5, single_warmup = 2;
  int prefill_iters = 10, prefill_warmup = 3;
};

// One engine configuration: a policy, with or without the prefix cache and batch invariance.
struct variant {
  policy_kind policy = policy_kind::split_fuse;
  bool prefix_caching = true;
  bool batch_invariant = false;
  std::string dtype = "fp32";  // engine.dtype: fp32, bf16, f16, q8_0, q4_0
  std::string name() const;
};

struct model_setup {
  zf::model_config cfg;
  std::vector<float> flat;  // seeded random GPT-2 parameters
  zf::tokenizer tok;
  std::string name;
};
model_setup make_model(const std::string& which, uint64_t seed);
std::unique_ptr<completion_backend> make_backend(const model_setup& ms, const options& o,
                                                 const variant& v, int max_queue);

// ---- workload ------------------------------------------------------------------------------

struct length_dist {
  double mean;
  int lo, hi;  // clip; sd = 30% of the mean (FastGen)
  int draw(std::mt19937_64& g) const;
};

struct workload_spec {
  std::string name;
  length_dist prompt, output;
  int shared_prefix = 0;  // tokens of one system prompt before every request's own prompt
};
workload_spec make_workload(const std::string& w);

struct request_spec {
  double arrival_s = 0;  // open loop: offset from the start
  int prompt_len = 0, max_tokens = 0;
  completion_request req;
};
completion_request make_request(std::mt19937_64& g, int prompt_len, int max_tokens, int vocab);
// n requests of workload w; Poisson arrivals at `rate` (0: all at once).
std::vector<request_spec> make_requests(const workload_spec& w, int n, double rate, uint64_t seed,
                                        int vocab);

// ---- driving an engine ---------------------------------------------------------------------

struct record {
  clk::time_point arrival{}, first{}, finish{};
  int tokens = 0;  // tokens received in events
  int status = 0;  // submit status (200 accepted; 0 not sent)
  uint64_t id = 0;
  finish_reason reason = finish_reason::none;
  bool done = false;
};

// Completion bookkeeping shared by the sinks (engine thread) and the generator.
struct tracker {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> finished;  // indices in finish order (preallocated)
  std::size_t n_finished = 0;
  void reset(std::size_t n);
  void on_finish(int idx);
};

// Records and completion tracking of one drive() call. The sinks hold it by shared_ptr, so it
// outlives the engine's last event even when a run times out.
struct run_state {
  std::vector<record> recs;
  tracker tr;
};

struct run_output {
  std::shared_ptr<run_state> st;
  const std::vector<record>& recs() const { return st->recs; }
  clk::time_point start{}, end{};  // end: drive() returned (all finished, or the timeout)
  bool timed_out = false;
};

// Submits each request (open loop at its arrival time, or closed loop with `clients` in flight)
// and waits for all to finish. Used both for calibration (arrival 0) and for the load runs.
run_output drive(completion_backend& be, std::vector<request_spec> reqs, int clients,
                 double timeout_s);

// Median TTFT of `reps` lone requests of a len-token prompt (fresh random tokens each, so the
// prefix cache cannot serve them), max_tokens 1.
double solo_ttft_ms(completion_backend& be, std::mt19937_64& g, int len, int reps, int vocab);

// ---- calibration: solo latencies on a separate engine -> SLA; bursts -> capacity -------------

struct calibration {
  std::vector<std::pair<int, double>> prefill;  // (prompt_len, solo TTFT ms), sorted by length
  double t_budget_ms = 0;   // solo TTFT of a token_budget-long prompt: one full step
  double tpot_solo_ms = 0;  // batch-1 decode
  int burst = 0;            // requests in each capacity burst
  double capacity_rps = 0;  // split_fuse saturation throughput of the mix, before the runs
  double capacity_invariant_rps = 0;  // the same under batch_invariant (--invariant-cost)
  double prefill_ms(int len) const;   // piecewise linear, extrapolated at the ends
};

// Solo latencies (the SLA's scale); with_capacity: also the saturation throughput (bursts).
calibration calibrate(const model_setup& ms, const options& o, const workload_spec& w,
                      bool with_capacity);
// The split_fuse saturation throughput of w's mix (requests/s), on a fresh engine of variant v;
// every call runs the same burst, so that two calls compare the machine, not the requests.
double burst_capacity(const model_setup& ms, const options& o, const workload_spec& w,
                      const variant& v, int* burst_size = nullptr);
// The engine the capacity bursts run on: split_fuse, without the prefix cache under
// --policy cache (the load both variants of that comparison can sustain).
variant capacity_variant(const options& o, bool batch_invariant);

// ---- one policy run ------------------------------------------------------------------------

struct sla_spec {
  double ttft_factor, ttft_const_ms, min_tok_per_s;
};

// A fresh engine of variant v runs reqs (after a warm-up); the summary's JSON: throughputs,
// TTFT/TPOT percentiles, SLA counts, the engine's counters over the run.
json run_policy(const model_setup& ms, const options& o, const variant& v,
                const std::vector<request_spec>& reqs, const calibration& cal, const sla_spec& sla,
                double timeout_s);

}  // namespace zf::bench_serve
