// bench_serve: zeroflow's serving benchmark (bench/serve runs it). An in-process load generator
// over actors::make_engine (no HTTP: it measures the engine), after the DeepSpeed-FastGen
// methodology scaled to a small CPU:
//
//   --mode load (default): a synthetic workload (random seeded token ids, lengths drawn from a
//     normal distribution with a 30% standard deviation, clipped; ignore_eos so output lengths
//     are exact; greedy) sent open-loop (Poisson arrivals at --rate requests/s; 0 = auto: --load
//     (0.6) times split_fuse's saturation throughput of the same mix, measured on a burst of
//     1.5 x max_seqs requests before the runs) or closed-loop (--clients C: each client sends its
//     next request when its previous one finished). The same requests (same
//     seed, same arrival times) run under each policy, a fresh engine each, one after the other.
//     Per request: arrival, first token (TTFT), finish, tokens; TPOT = (finish - first) /
//     (tokens - 1). Per policy: request and output-token throughput, TTFT and TPOT p50/p95/p99,
//     and the SLA-effective throughput (requests per second, over the run, that meet both SLAs):
//       prompt SLA      TTFT <= ttft_factor * solo_prefill(prompt_len) + ttft_steps * T_b
//       generation SLA  tokens/s of the request after its first token >= 1 / (tpot_steps * T_b)
//     where solo_prefill is interpolated from TTFTs of solo prompts (measured on a separate
//     calibration engine before the runs) and T_b is the solo TTFT of a token-budget-long
//     prompt, i.e. the cost of one full forward step.
//   --mode single: batch-1 latencies comparable with shared/peers/torch_gpt_bench.py --mode infer:
//     decode ms/token (median over 64 greedy tokens after a 256-token prompt, 5 runs after 2
//     warm-up runs) and 256-token prefill latency (TTFT of a 256-token prompt with max_tokens 1,
//     median of 10 after 3 warm-up).
//
// The generator thread sleeps until each arrival on the steady clock; all per-request records
// and requests are built before the run; the sinks (on the engine's thread) only take
// timestamps and count tokens. Last line: "RESULT {json}".
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "actors/engine.hpp"
#include "runtime/config.hpp"
#include "runtime/lm_weights.hpp"
#include "runtime/model.hpp"
#include "runtime/serving.hpp"
#include "runtime/tokenizer.hpp"

namespace {

using clk = std::chrono::steady_clock;
using json = nlohmann::json;
using zf::serve::completion_backend;
using zf::serve::completion_event;
using zf::serve::completion_request;
using zf::serve::finish_reason;
using policy_kind = zf::actors::engine_options::policy_kind;

double secs(clk::duration d) {
  return std::chrono::duration<double>(d).count();
}
double msec(clk::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double percentile(std::vector<double> v, double p) {  // linear interpolation; NaN when empty
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  double x = p / 100.0 * double(v.size() - 1);
  std::size_t i = std::size_t(x);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (x - double(i)) * (v[i + 1] - v[i]);
}
double median(std::vector<double> v) {
  return percentile(std::move(v), 50);
}
json num(double x) {
  return std::isfinite(x) ? json(x) : json(nullptr);
}

const char* policy_name(policy_kind p) {
  return p == policy_kind::split_fuse ? "split_fuse" : "static_batch";
}

// One engine configuration of a load run: a policy, with or without the prefix cache.
struct variant {
  policy_kind policy = policy_kind::split_fuse;
  bool prefix_caching = true;
  std::string name() const {
    return std::string(policy_name(policy)) + (prefix_caching ? "" : " (no prefix cache)");
  }
};

// ---- options -------------------------------------------------------------------------------

struct options {
  std::string model = "tiny", workload = "long", policy = "both", mode = "load", json_file;
  int requests = 0;      // 0: rate * duration (open loop) or 8 per client (closed loop)
  double duration = 30;  // seconds of arrivals when --requests is 0 (open loop)
  double rate = 0;       // requests/s; 0: load * measured split_fuse saturation throughput
  double load = 0.6;     // at 0.8 the burst estimate proved optimistic: arrivals outran capacity
  int clients = 0;       // > 0: closed loop
  int budget = 256, max_seqs = 32, block_size = 16, num_blocks = 0, threads = 2;
  bool prefix_caching = true;  // --mode single always runs without it (it measures compute)
  uint64_t seed = 1;
  double timeout = 0;  // per policy run, seconds; 0: max(120, 5 * arrival span)
  double ttft_factor = 4, ttft_steps = 2, tpot_steps = 2;  // SLA (see the header comment)
  int single_prompt = 256, single_tokens = 64, single_runs = 5, single_warmup = 2;
  int prefill_iters = 10, prefill_warmup = 3;
};

// ---- model ---------------------------------------------------------------------------------

struct model_setup {
  zf::model_config cfg;
  std::vector<float> flat;  // seeded random GPT-2 parameters
  zf::tokenizer tok;
  std::string name;
  zf::lm_weights weights() const { return zf::gpt2_lm_weights(cfg, flat.data(), name); }
};

std::filesystem::path data_dir() {
  if (const char* e = std::getenv("ZF_DATA_DIR"); e && *e) return e;
  return ZF_DEFAULT_DATA_DIR;
}

model_setup make_model(const std::string& which, uint64_t seed) {
  zf::model_config m;
  if (which == "tiny") {
    m.n_layer = 4, m.n_head = 4, m.n_embd = 256;
  } else if (which == "gpt2-124M") {
    m.n_layer = 12, m.n_head = 12, m.n_embd = 768;
  } else {
    throw std::runtime_error("unknown --model " + which);
  }
  m.vocab_size = 50257;
  m.n_positions = 1024;
  auto layout = zf::layout_of(m);
  std::vector<float> flat(layout.total);
  zf::init_params(layout, m.n_layer, seed, flat.data());
  return model_setup{m, std::move(flat), zf::tokenizer::load_gpt2(data_dir() / "gpt2"),
                     "zeroflow-" + which};
}

std::unique_ptr<completion_backend> make_backend(const model_setup& ms, const options& o,
                                                 policy_kind p, int max_queue,
                                                 bool prefix_caching = true) {
  zf::actors::engine_options eo;
  eo.policy = p;
  eo.token_budget = o.budget;
  eo.max_seqs = o.max_seqs;
  eo.block_size = o.block_size;
  eo.prefix_caching = prefix_caching && o.prefix_caching;
  eo.num_blocks = o.num_blocks;
  eo.max_queue = max_queue;
  eo.threads = o.threads;
  return zf::actors::make_engine(ms.weights(), ms.tok, eo);
}

// ---- workload ------------------------------------------------------------------------------

struct length_dist {
  double mean;
  int lo, hi;  // clip; sd = 30% of the mean (FastGen)
  int draw(std::mt19937_64& g) const {
    std::normal_distribution<double> d(mean, 0.3 * mean);
    return std::clamp(int(std::lround(d(g))), lo, hi);
  }
};

struct workload_spec {
  std::string name;
  length_dist prompt, output;
  int shared_prefix = 0;  // tokens of one system prompt before every request's own prompt
};

// Scaled from FastGen's mixes (prompt 2600 / output 60 and prompt 1200 / output 128 on 4k
// contexts) to a 1024-token context on 2 CPU cores.
workload_spec make_workload(const std::string& w) {
  if (w == "long") return {"long", {768, 256, 960}, {32, 8, 64}};
  if (w == "chat") return {"chat", {96, 16, 256}, {160, 48, 320}};
  // A shared 512-token system prompt before each request's own ~64 tokens (few-shot / agent
  // style): what prefix caching is for.
  if (w == "prefix") return {"prefix", {64, 16, 128}, {32, 8, 64}, 512};
  throw std::runtime_error("unknown --workload " + w);
}

struct request_spec {
  double arrival_s = 0;  // open loop: offset from the start
  int prompt_len = 0, max_tokens = 0;
  completion_request req;
};

completion_request make_request(std::mt19937_64& g, int prompt_len, int max_tokens, int vocab) {
  completion_request r;
  std::uniform_int_distribution<int> tok(0, vocab - 2);  // never the end-of-text token
  r.prompt.resize(prompt_len);
  for (int& t : r.prompt) t = tok(g);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  r.n = 1;
  return r;
}

std::vector<request_spec> make_requests(const workload_spec& w, int n, double rate, uint64_t seed,
                                        int vocab) {
  std::mt19937_64 g(seed);
  std::exponential_distribution<double> gap(rate > 0 ? rate : 1.0);
  const std::vector<int> system = make_request(g, w.shared_prefix, 1, vocab).prompt;
  std::vector<request_spec> out(n);
  double t = 0;
  for (auto& r : out) {
    if (rate > 0) t += gap(g);
    r.arrival_s = rate > 0 ? t : 0;
    r.prompt_len = w.prompt.draw(g);
    r.max_tokens = w.output.draw(g);
    r.req = make_request(g, r.prompt_len, r.max_tokens, vocab);
    r.req.prompt.insert(r.req.prompt.begin(), system.begin(), system.end());
    r.prompt_len += w.shared_prefix;
  }
  return out;
}

// ---- measurement ---------------------------------------------------------------------------

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

  void reset(std::size_t n) {
    finished.assign(n, -1);
    n_finished = 0;
  }
  void on_finish(int idx) {
    {
      std::lock_guard<std::mutex> l(mu);
      finished[n_finished++] = idx;
    }
    cv.notify_one();
  }
};

// Records and completion tracking of one drive() call. The sinks hold it by shared_ptr, so it
// outlives the engine's last event even when a run times out.
struct run_state {
  std::vector<record> recs;
  tracker tr;
};

zf::serve::event_sink make_sink(std::shared_ptr<run_state> st, int idx) {
  return [st = std::move(st), idx](const completion_event& e) {
    auto now = clk::now();
    record& r = st->recs[idx];
    if (!e.tokens.empty()) {
      if (r.tokens == 0) r.first = now;
      r.tokens += int(e.tokens.size());
    }
    if (e.finish != finish_reason::none) {
      r.finish = now;
      r.reason = e.finish;
      r.done = true;
      st->tr.on_finish(idx);
    }
  };
}

// Submits each request (open loop at its arrival time, or closed loop) and waits for all to
// finish. Used both for calibration (arrival 0) and for the load runs.
struct run_output {
  std::shared_ptr<run_state> st;
  const std::vector<record>& recs() const { return st->recs; }
  clk::time_point start{};
  bool timed_out = false;
};

run_output drive(completion_backend& be, std::vector<request_spec> reqs, int clients,
                 double timeout_s) {
  const int n = int(reqs.size());
  run_output out;
  out.st = std::make_shared<run_state>();
  auto& recs = out.st->recs;
  auto& tr = out.st->tr;
  recs.assign(n, record{});
  tr.reset(n);
  std::vector<zf::serve::event_sink> sinks;
  sinks.reserve(n);
  for (int i = 0; i < n; ++i) sinks.push_back(make_sink(out.st, i));
  auto submit = [&](int i, clk::time_point arrival) {
    auto& r = recs[i];
    r.arrival = arrival;
    auto res = be.submit(std::move(reqs[i].req), std::move(sinks[i]));
    r.status = res.status;
    r.id = res.id;
    if (res.status != 200) {
      r.done = true;
      r.finish = clk::now();
      tr.on_finish(i);
    }
  };
  const auto start = clk::now() + std::chrono::milliseconds(20);
  out.start = start;
  const auto deadline =
      start + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(timeout_s));
  std::size_t seen = 0;
  if (clients <= 0) {  // open loop: sleep until each arrival, submit
    for (int i = 0; i < n; ++i) {
      auto at = start + std::chrono::duration_cast<clk::duration>(
                            std::chrono::duration<double>(reqs[i].arrival_s));
      std::this_thread::sleep_until(at);
      submit(i, at);
    }
  } else {  // closed loop: `clients` in flight, the next goes when one finishes
    std::this_thread::sleep_until(start);
    int next = 0;
    for (; next < std::min(clients, n); ++next) submit(next, clk::now());
    std::unique_lock<std::mutex> l(tr.mu);
    while (next < n) {
      if (!tr.cv.wait_until(l, deadline, [&] { return tr.n_finished > seen; })) break;
      std::size_t upto = tr.n_finished;
      l.unlock();
      for (; seen < upto && next < n; ++seen) submit(next++, clk::now());
      l.lock();
    }
  }
  {
    std::unique_lock<std::mutex> l(tr.mu);
    if (!tr.cv.wait_until(l, deadline, [&] { return tr.n_finished == std::size_t(n); })) {
      out.timed_out = true;
      l.unlock();
      for (auto& r : recs)  // idempotent; finished ids are ignored
        if (r.status == 200) be.cancel(r.id);
      l.lock();
      tr.cv.wait_for(l, std::chrono::seconds(30), [&] { return tr.n_finished == std::size_t(n); });
    }
  }
  return out;
}

// ---- calibration: solo latencies on a separate engine -> SLA and capacity estimate ----------

struct calibration {
  std::vector<std::pair<int, double>> prefill;  // (prompt_len, solo TTFT ms), sorted by length
  double t_budget_ms = 0;             // solo TTFT of a token_budget-long prompt: one full step
  double tpot_solo_ms = 0;            // batch-1 decode
  int burst = 0;                      // requests in the capacity burst
  double capacity_rps = 0;            // split_fuse saturation throughput of the workload mix
  double prefill_ms(int len) const {  // piecewise linear, extrapolated at the ends
    const auto& p = prefill;
    if (p.size() == 1) return p[0].second;
    std::size_t i = 1;
    while (i + 1 < p.size() && p[i].first < len) ++i;
    auto [x0, y0] = p[i - 1];
    auto [x1, y1] = p[i];
    return std::max(0.0, y0 + (y1 - y0) * double(len - x0) / double(x1 - x0));
  }
};

double solo_ttft_ms(completion_backend& be, std::mt19937_64& g, int len, int reps, int vocab) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) {
    std::vector<request_spec> r(1);
    r[0].req = make_request(g, len, 1, vocab);
    auto o = drive(be, std::move(r), 0, 120);
    if (o.recs()[0].tokens > 0) v.push_back(msec(o.recs()[0].first - o.recs()[0].arrival));
  }
  return median(v);
}

// Median TPOT of `batch` requests (prompt 16, 33 tokens) submitted together.
double batch_tpot_ms(completion_backend& be, std::mt19937_64& g, int batch, int vocab) {
  std::vector<request_spec> r(batch);
  for (auto& x : r) x.req = make_request(g, 16, 33, vocab);
  auto o = drive(be, std::move(r), 0, 300);
  std::vector<double> v;
  for (auto& x : o.recs())
    if (x.tokens > 1) v.push_back(msec(x.finish - x.first) / (x.tokens - 1));
  return median(v);
}

calibration calibrate(const model_setup& ms, const options& o, const workload_spec& w,
                      bool with_capacity) {
  // static_batch prefills a whole prompt in one forward pass: the plain solo prefill cost.
  auto be = make_backend(ms, o, policy_kind::static_batch, 256);
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
    // Saturation throughput of the workload mix under split_fuse: a burst of 1.5 x max_seqs
    // requests (lengths drawn from the workload, another seed) submitted at once; completions
    // per second between the first 1/6 and the last 1/6 of the finishes (steady state: no
    // ramp-up, no lone tail).
    // With --policy cache the capacity is the uncached engine's, so that the offered load is one
    // both variants can sustain (the cached one sustains several times more on `prefix`).
    auto sf = make_backend(ms, o, policy_kind::split_fuse, 256, o.policy != "cache");
    solo_ttft_ms(*sf, g, 64, 1, vocab);
    const int m = std::max(12, o.max_seqs + o.max_seqs / 2);
    auto burst = make_requests(w, m, 0, o.seed + 0x9e3779b9ULL, vocab);
    auto out = drive(*sf, std::move(burst), 0, 600);
    std::vector<clk::time_point> fin;
    for (auto& r : out.recs())
      if (r.done && r.status == 200) fin.push_back(r.finish);
    std::sort(fin.begin(), fin.end());
    const int a = int(fin.size()) / 6, b = int(fin.size()) - 1 - int(fin.size()) / 6;
    c.burst = m;
    if (b > a) c.capacity_rps = (b - a) / std::max(secs(fin[b] - fin[a]), 1e-9);
  }
  if (c.t_budget_ms <= 0) c.t_budget_ms = c.prefill_ms(o.budget);
  return c;
}

// ---- one policy run ------------------------------------------------------------------------

struct sla_spec {
  double ttft_factor, ttft_const_ms, min_tok_per_s;
};

json summarize(const run_output& out, const std::vector<request_spec>& reqs, const calibration& cal,
               const sla_spec& sla, const variant& v) {
  const int n = int(out.recs().size());
  std::vector<double> ttft, tpot;
  int completed = 0, rejected = 0, not_sent = 0, failed = 0, met = 0, met_ttft = 0, met_gen = 0;
  long long out_tokens = 0;
  clk::time_point first_arrival = out.recs().empty() ? out.start : out.recs()[0].arrival,
                  last_finish = out.start;
  for (int i = 0; i < n; ++i) {
    const auto& r = out.recs()[i];
    if (r.status == 0) {  // closed loop cut short by the timeout
      ++not_sent;
      continue;
    }
    first_arrival = std::min(first_arrival, r.arrival);
    if (r.status != 200) {
      ++rejected;
      continue;
    }
    if (!r.done || r.reason != finish_reason::length || r.tokens != reqs[i].max_tokens) {
      ++failed;
      out_tokens += r.tokens;
      if (r.done) last_finish = std::max(last_finish, r.finish);
      continue;
    }
    ++completed;
    out_tokens += r.tokens;
    last_finish = std::max(last_finish, r.finish);
    double t_first = msec(r.first - r.arrival);
    ttft.push_back(t_first);
    double gen_s = secs(r.finish - r.first);
    double per_tok = r.tokens > 1 ? 1000.0 * gen_s / (r.tokens - 1) : 0.0;
    if (r.tokens > 1) tpot.push_back(per_tok);
    bool ok_ttft =
        t_first <= sla.ttft_factor * cal.prefill_ms(reqs[i].prompt_len) + sla.ttft_const_ms;
    bool ok_gen = r.tokens <= 1 || (r.tokens - 1) / std::max(gen_s, 1e-9) >= sla.min_tok_per_s;
    met_ttft += ok_ttft;
    met_gen += ok_gen;
    met += ok_ttft && ok_gen;
  }
  double span = std::max(secs(last_finish - first_arrival), 1e-9);
  auto pct = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return json{{"p50", num(percentile(v, 50))},
                {"p95", num(percentile(v, 95))},
                {"p99", num(percentile(v, 99))},
                {"mean", num(v.empty() ? std::nan("") : sum / double(v.size()))}};
  };
  return json{{"policy", v.name()},
              {"requests", n},
              {"completed", completed},
              {"rejected", rejected},
              {"not_sent", not_sent},
              {"failed", failed},
              {"timed_out", out.timed_out},
              {"duration_s", span},
              {"request_throughput", completed / span},
              {"output_token_throughput", double(out_tokens) / span},
              {"ttft_ms", pct(ttft)},
              {"tpot_ms", pct(tpot)},
              {"sla_met", met},
              {"sla_met_ttft", met_ttft},
              {"sla_met_generation", met_gen},
              {"effective_throughput", met / span}};
}

// A few counters from the engine's Prometheus text.
json engine_counters(const std::string& text) {
  json j = json::object();
  const std::pair<const char*, const char*> keys[] = {
      {"zeroflow_engine_steps_total", "steps"},
      {"zeroflow_prompt_tokens_total", "prompt_tokens"},
      {"zeroflow_generation_tokens_total", "generation_tokens"},
      {"zeroflow_preemptions_total", "preemptions"},
      {"zeroflow_prefix_cache_queries_total", "prefix_cache_queries"},
      {"zeroflow_prefix_cache_hits_total", "prefix_cache_hits"},
      {"zeroflow_step_tokens_sum", "step_tokens_sum"},
      {"zeroflow_step_tokens_count", "step_tokens_count"}};
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    std::size_t name_end = line.find_first_of(" {");
    if (name_end == std::string_view::npos) continue;
    std::string_view name = line.substr(0, name_end);
    for (auto& [k, v] : keys)
      if (name == k)
        j[v] = std::strtod(std::string(line.substr(line.rfind(' ') + 1)).c_str(), nullptr);
  }
  return j;
}

json run_policy(const model_setup& ms, const options& o, const variant& v,
                const std::vector<request_spec>& reqs, const calibration& cal, const sla_spec& sla,
                double timeout_s) {
  auto be = make_backend(ms, o, v.policy, std::max<int>(256, int(reqs.size())), v.prefix_caching);
  {  // warm-up, not measured
    std::mt19937_64 g(o.seed ^ 0xa11ce);
    std::vector<request_spec> w(4);
    for (std::size_t i = 0; i < w.size(); ++i)
      w[i].req = make_request(g, i == 0 ? std::min(o.budget, 512) : 32, 8, ms.cfg.vocab_size);
    drive(*be, std::move(w), 0, 120);
  }
  // This policy's own solo TTFT at the mean prompt length (split_fuse chunks it by the budget):
  // a diagnostic beside the calibration's whole-prompt prefill.
  std::mt19937_64 g(o.seed ^ 0x5010);
  const int mean_len = int(reqs.empty() ? 0 : [&] {
    double s = 0;
    for (auto& r : reqs) s += r.prompt_len;
    return s / double(reqs.size());
  }());
  double solo = mean_len > 0 ? solo_ttft_ms(*be, g, mean_len, 2, ms.cfg.vocab_size) : std::nan("");
  std::vector<request_spec> copy = reqs;  // built before the clock starts
  json before = engine_counters(be->metrics_text());
  auto out = drive(*be, std::move(copy), o.clients, timeout_s);
  auto res = summarize(out, reqs, cal, sla, v);
  json after = engine_counters(be->metrics_text());
  for (auto& [k, v] : after.items())  // this run only
    if (before.contains(k)) v = v.get<double>() - before[k].get<double>();
  res["engine"] = after;
  res["solo_ttft_mean_prompt_ms"] = num(solo);
  res["mean_prompt_len"] = mean_len;
  be.reset();
  return res;
}

std::string fmt3(const json& j) {
  auto f = [](const json& x) {
    return x.is_null() ? std::string("-") : fmt::format("{:.1f}", x.get<double>());
  };
  return f(j["p50"]) + " / " + f(j["p95"]) + " / " + f(j["p99"]);
}

// Writes res to --json (if given) and prints the RESULT line.
int emit_result(const options& o, const json& res) {
  if (!o.json_file.empty()) {
    std::FILE* f = std::fopen(o.json_file.c_str(), "w");
    if (!f) throw std::runtime_error("cannot write " + o.json_file);
    std::fputs(res.dump(1).c_str(), f);
    std::fclose(f);
  }
  std::cout << "RESULT " << res.dump() << std::endl;
  return 0;
}

int run_load(const options& o) {
  auto w = make_workload(o.workload);
  std::vector<variant> pols;
  if (o.policy == "both" || o.policy == "split_fuse" || o.policy == "cache")
    pols.push_back({policy_kind::split_fuse, true});
  if (o.policy == "both" || o.policy == "static_batch")
    pols.push_back({policy_kind::static_batch, true});
  if (o.policy == "cache") pols.push_back({policy_kind::split_fuse, false});
  if (pols.empty()) throw std::runtime_error("unknown --policy " + o.policy);
  auto ms = make_model(o.model, o.seed);
  if (w.shared_prefix + w.prompt.hi + w.output.hi > ms.cfg.n_positions)
    throw std::runtime_error("workload does not fit the context");

  auto t_cal = clk::now();
  calibration cal = calibrate(ms, o, w, o.clients <= 0 && o.rate <= 0);
  double cal_s = secs(clk::now() - t_cal);
  double capacity = cal.capacity_rps;
  double rate = o.clients > 0 ? 0.0 : (o.rate > 0 ? o.rate : o.load * capacity);
  if (o.clients <= 0 && !(rate > 0))
    throw std::runtime_error("could not measure the saturation throughput; pass --rate");
  int n = o.requests;
  if (n <= 0) n = o.clients > 0 ? 8 * o.clients : std::max(16, int(std::lround(rate * o.duration)));
  sla_spec sla{o.ttft_factor, o.ttft_steps * cal.t_budget_ms,
               1000.0 / (o.tpot_steps * cal.t_budget_ms)};
  auto reqs = make_requests(w, n, rate, o.seed, ms.cfg.vocab_size);
  double span = reqs.empty() ? 0 : reqs.back().arrival_s;
  double timeout_s = o.timeout > 0 ? o.timeout : std::max(120.0, 5 * span);
  long long ptoks = 0, otoks = 0;
  for (auto& r : reqs) ptoks += r.prompt_len, otoks += r.max_tokens;

  std::string arrivals =
      o.clients > 0 ? fmt::format("closed loop, {} clients", o.clients)
                    : (o.rate > 0 ? fmt::format("Poisson {:.2f} req/s", rate)
                                  : fmt::format("Poisson {:.2f} req/s ({:.2f} x split_fuse "
                                                "saturation throughput {:.2f} req/s)",
                                                rate, o.load, capacity));
  fmt::print(
      "bench_serve: model {} ({} layers, {} heads, {} wide, vocab {}, context {}), threads {}\n",
      o.model, ms.cfg.n_layer, ms.cfg.n_head, ms.cfg.n_embd, ms.cfg.vocab_size, ms.cfg.n_positions,
      o.threads);
  fmt::print(
      "workload {}: {} requests, prompt ~N({:.0f}, 30%) in [{}, {}] (mean {:.0f}), output "
      "~N({:.0f}, 30%) in [{}, {}] (mean {:.0f}); {}; seed {}\n",
      w.name, n, w.prompt.mean, w.prompt.lo, w.prompt.hi, double(ptoks) / n, w.output.mean,
      w.output.lo, w.output.hi, double(otoks) / n, arrivals, o.seed);
  fmt::print("engine: token_budget {}, max_seqs {}, block_size {}\n", o.budget, o.max_seqs,
             o.block_size);
  std::string pre;
  for (auto& [len, t] : cal.prefill) pre += fmt::format(" {}:{:.1f}", len, t);
  fmt::print(
      "calibration ({:.1f} s): solo prefill ms by prompt length{}; solo decode {:.2f} ms/token{}\n",
      cal_s, pre, cal.tpot_solo_ms,
      cal.burst > 0 ? fmt::format("; split_fuse saturation throughput {:.2f} req/s (burst of {})",
                                  cal.capacity_rps, cal.burst)
                    : std::string());
  fmt::print(
      "SLA: prompt TTFT <= {:g} x solo prefill(prompt) + {:g} x T_b ({:.1f} ms), with T_b = {:.1f} "
      "ms the solo "
      "{}-token prefill (one full step); e.g. {:.0f} ms for a {}-token prompt; generation >= "
      "{:.1f} tokens/s "
      "per request after its first token ({:g} x T_b = {:.1f} ms per token)\n",
      sla.ttft_factor, o.ttft_steps, sla.ttft_const_ms, cal.t_budget_ms, o.budget,
      sla.ttft_factor * cal.prefill_ms(int(w.prompt.mean)) + sla.ttft_const_ms, int(w.prompt.mean),
      sla.min_tok_per_s, o.tpot_steps, 1000.0 / sla.min_tok_per_s);
  std::fflush(stdout);

  json results = json::array();
  for (const variant& v : pols) {
    auto r = run_policy(ms, o, v, reqs, cal, sla, timeout_s);
    fmt::print(
        "  {}: solo TTFT of a {}-token prompt {:.1f} ms; {} done, {} rejected, {} failed{} in "
        "{:.1f} s; "
        "SLA met {} (TTFT {}, generation {})\n",
        v.name(), r["mean_prompt_len"].get<int>(),
        r["solo_ttft_mean_prompt_ms"].is_number() ? r["solo_ttft_mean_prompt_ms"].get<double>()
                                                  : NAN,
        r["completed"].get<int>(), r["rejected"].get<int>(), r["failed"].get<int>(),
        r["timed_out"].get<bool>() ? " (timed out)" : "", r["duration_s"].get<double>(),
        r["sla_met"].get<int>(), r["sla_met_ttft"].get<int>(), r["sla_met_generation"].get<int>());
    const json& e = r["engine"];
    if (e.contains("steps") && e.contains("step_tokens_sum") && e["steps"].get<double>() > 0)
      fmt::print(
          "    engine: {:.0f} steps, {:.1f} tokens/step, {:.1f} ms/step over the run, {:.0f} "
          "preemptions, prefix cache {:.0f} of {:.0f} prompt tokens\n",
          e["steps"].get<double>(), e["step_tokens_sum"].get<double>() / e["steps"].get<double>(),
          1000.0 * r["duration_s"].get<double>() / e["steps"].get<double>(),
          e.value("preemptions", 0.0), e.value("prefix_cache_hits", 0.0),
          e.value("prefix_cache_queries", 0.0));
    std::fflush(stdout);
    results.push_back(r);
  }
  fmt::print(
      "\n| policy | req/s | out tok/s | TTFT ms p50 / p95 / p99 | TPOT ms p50 / p95 / p99 | SLA "
      "met | effective req/s |\n");
  fmt::print("|---|---|---|---|---|---|---|\n");
  for (auto& r : results)
    fmt::print("| {} | {:.2f} | {:.0f} | {} | {} | {}/{} | {:.2f} |\n",
               r["policy"].get<std::string>(), r["request_throughput"].get<double>(),
               r["output_token_throughput"].get<double>(), fmt3(r["ttft_ms"]), fmt3(r["tpot_ms"]),
               r["sla_met"].get<int>(), r["requests"].get<int>(),
               r["effective_throughput"].get<double>());
  json res{{"mode", "load"},
           {"model", o.model},
           {"workload", w.name},
           {"requests", n},
           {"arrivals", o.clients > 0 ? "closed" : "poisson"},
           {"rate", rate},
           {"load", o.rate > 0 || o.clients > 0 ? json(nullptr) : json(o.load)},
           {"estimated_capacity", capacity},
           {"clients", o.clients},
           {"seed", o.seed},
           {"token_budget", o.budget},
           {"max_seqs", o.max_seqs},
           {"threads", o.threads},
           {"mean_prompt", double(ptoks) / n},
           {"mean_output", double(otoks) / n},
           {"calibration",
            {{"prefill_ms", cal.prefill},
             {"t_budget_ms", cal.t_budget_ms},
             {"tpot_solo_ms", cal.tpot_solo_ms},
             {"capacity_burst", cal.burst},
             {"capacity_rps", cal.capacity_rps}}},
           {"sla",
            {{"ttft_factor", sla.ttft_factor},
             {"ttft_const_ms", sla.ttft_const_ms},
             {"min_tokens_per_s", sla.min_tok_per_s}}},
           {"policies", results}};
  if (results.size() == 2) {
    double a = results[0]["effective_throughput"], b = results[1]["effective_throughput"];
    res["effective_throughput_ratio"] = b > 0 ? json(a / b) : json(nullptr);
    const std::string n0 = results[0]["policy"], n1 = results[1]["policy"];
    fmt::print("\n{} / {}: effective throughput {}, request throughput {:.2f}x, TTFT p50 {}\n", n0,
               n1, b > 0 ? fmt::format("{:.2f}x", a / b) : fmt::format("inf ({} met no SLA)", n1),
               results[0]["request_throughput"].get<double>() /
                   results[1]["request_throughput"].get<double>(),
               results[0]["ttft_ms"]["p50"].is_number() && results[1]["ttft_ms"]["p50"].is_number()
                   ? fmt::format("{:.2f}x lower", results[1]["ttft_ms"]["p50"].get<double>() /
                                                      results[0]["ttft_ms"]["p50"].get<double>())
                   : std::string("-"));
  }
  return emit_result(o, res);
}

// ---- single stream -------------------------------------------------------------------------

int run_single(const options& o) {
  auto ms = make_model(o.model, o.seed);
  policy_kind p = o.policy == "static_batch" ? policy_kind::static_batch : policy_kind::split_fuse;
  // No prefix cache: the repeated prompt would be served from it and prefill not measured.
  auto be = make_backend(ms, o, p, 256, false);
  const int vocab = ms.cfg.vocab_size, P = o.single_prompt, N = o.single_tokens;
  std::mt19937_64 g(o.seed ^ 0x51691e);
  completion_request prompt = make_request(g, P, 1, vocab);

  // Prefill: TTFT of a P-token prompt, max_tokens 1.
  std::vector<double> pre;
  for (int i = 0; i < o.prefill_warmup + o.prefill_iters; ++i) {
    std::vector<request_spec> r(1);
    r[0].req = prompt;
    auto out = drive(*be, std::move(r), 0, 300);
    if (i >= o.prefill_warmup && out.recs()[0].tokens > 0)
      pre.push_back(msec(out.recs()[0].first - out.recs()[0].arrival));
  }
  // Decode: per-token intervals between events after the first token.
  struct stamps {
    std::vector<std::pair<clk::time_point, int>> ev;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  } st;
  std::vector<double> per_tok;
  per_tok.reserve(std::size_t(o.single_runs) * N);
  st.ev.reserve(N + 4);
  for (int r = 0; r < o.single_warmup + o.single_runs; ++r) {
    st.ev.clear();
    st.done = false;
    completion_request req = prompt;
    req.max_tokens = N;
    auto res = be->submit(std::move(req), [&st](const completion_event& e) {
      auto now = clk::now();
      if (!e.tokens.empty()) st.ev.emplace_back(now, int(e.tokens.size()));
      if (e.finish != finish_reason::none) {
        std::lock_guard<std::mutex> l(st.mu);
        st.done = true;
        st.cv.notify_one();
      }
    });
    if (res.status != 200) throw std::runtime_error("submit failed: " + res.message);
    std::unique_lock<std::mutex> l(st.mu);
    if (!st.cv.wait_for(l, std::chrono::seconds(300), [&] { return st.done; }))
      throw std::runtime_error("single-stream decode timed out");
    if (r < o.single_warmup) continue;
    for (std::size_t i = 1; i < st.ev.size(); ++i) {
      double d = msec(st.ev[i].first - st.ev[i - 1].first) / st.ev[i].second;
      for (int k = 0; k < st.ev[i].second; ++k) per_tok.push_back(d);
    }
  }
  json res{{"mode", "single"},
           {"model", o.model},
           {"policy", policy_name(p)},
           {"threads", o.threads},
           {"prompt_len", P},
           {"decode_tokens", N},
           {"prefill_last_ms_median", num(median(pre))},
           {"prefill_ms_min", num(pre.empty() ? NAN : *std::min_element(pre.begin(), pre.end()))},
           {"decode_ms_per_token_median", num(median(per_tok))},
           {"decode_tokens_per_s", num(1000.0 / median(per_tok))}};
  fmt::print(
      "bench_serve single-stream, model {}, threads {}: prefill {} tokens (TTFT, max_tokens 1) "
      "{:.1f} ms median; "
      "decode {:.2f} ms/token median ({} tokens x {} runs)\n",
      o.model, o.threads, P, median(pre), median(per_tok), N, o.single_runs);
  return emit_result(o, res);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App app{"bench_serve: serving benchmark over the in-process engine (FastGen methodology)"};
  app.add_option("--mode", o.mode, "load | single")->check(CLI::IsMember({"load", "single"}));
  app.add_option("--model", o.model, "tiny | gpt2-124M (random seeded weights)")
      ->check(CLI::IsMember({"tiny", "gpt2-124M"}));
  app.add_option("--workload", o.workload,
                 "long (long prompts, short outputs) | chat (short prompts, longer outputs) | "
                 "prefix (a shared 512-token system prompt + ~64 own tokens, short outputs)")
      ->check(CLI::IsMember({"long", "chat", "prefix"}));
  app.add_option("--policy", o.policy,
                 "split_fuse | static_batch | both | cache (split_fuse with and without the "
                 "prefix cache)")
      ->check(CLI::IsMember({"split_fuse", "static_batch", "both", "cache"}));
  app.add_flag("!--no-prefix-caching", o.prefix_caching, "load runs without the prefix cache");
  app.add_option("--requests", o.requests,
                 "requests per policy; 0: rate x --duration (open loop), 8 x clients (closed)");
  app.add_option("--duration", o.duration, "seconds of arrivals when --requests is 0");
  app.add_option("--rate", o.rate,
                 "open-loop Poisson arrivals, requests/s; 0: --load x split_fuse saturation "
                 "throughput (measured)");
  app.add_option(
      "--load", o.load,
      "offered load as a fraction of the measured saturation throughput (with --rate 0)");
  app.add_option("--clients", o.clients,
                 "closed loop with this many clients (instead of Poisson arrivals)");
  app.add_option("--budget", o.budget, "engine token budget per forward pass");
  app.add_option("--max-seqs", o.max_seqs, "engine running sequences at most");
  app.add_option("--block-size", o.block_size, "KV block size");
  app.add_option("--num-blocks", o.num_blocks, "KV blocks; 0: engine default");
  app.add_option("--threads", o.threads, "engine compute threads");
  app.add_option("--seed", o.seed, "workload and weights seed");
  app.add_option("--timeout", o.timeout, "seconds per policy run; 0: max(120, 5 x arrival span)");
  app.add_option("--sla-ttft-factor", o.ttft_factor,
                 "prompt SLA: TTFT <= F x solo prefill + S x T_b");
  app.add_option("--sla-ttft-steps", o.ttft_steps, "prompt SLA: S");
  app.add_option("--sla-tpot-steps", o.tpot_steps, "generation SLA: tokens/s >= 1 / (G x T_b)");
  app.add_option("--single-prompt", o.single_prompt,
                 "single mode: prompt tokens (prefill and decode)");
  app.add_option("--single-tokens", o.single_tokens, "single mode: decoded tokens per run");
  app.add_option("--single-runs", o.single_runs, "single mode: measured decode runs");
  app.add_option("--prefill-iters", o.prefill_iters, "single mode: measured prefills");
  app.add_option("--json", o.json_file, "also write the result here");
  CLI11_PARSE(app, argc, argv);
  try {
    return o.mode == "single" ? run_single(o) : run_load(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_serve: " << e.what() << "\n";
    return 1;
  }
}
