// bench_serve's load generator and statistics: the engines under test, the synthetic workloads,
// the open- and closed-loop driver, and one policy run's summary (serve.cpp describes the
// method, serve_calibrate.cpp the SLA and capacity calibration).
#include "bench/serve_load.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"

namespace zf::bench_serve {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  double x = p / 100.0 * double(v.size() - 1);
  std::size_t i = std::size_t(x);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (x - double(i)) * (v[i + 1] - v[i]);
}

double loadavg_1min() {
  std::ifstream f("/proc/loadavg");
  double x = std::nan("");
  f >> x;
  return f ? x : std::nan("");
}

// ---- model and engines ---------------------------------------------------------------------

std::string variant::name() const {
  std::string s = policy == policy_kind::split_fuse ? "split_fuse" : "static_batch";
  if (!prefix_caching) s += " (no prefix cache)";
  if (batch_invariant) s += " (batch-invariant)";
  if (dtype != "fp32") s += " (" + dtype + ")";
  return s;
}

static std::filesystem::path data_dir() {
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
                                                 const variant& v, int max_queue) {
  zf::engine_config eo;
  eo.policy = v.policy == policy_kind::split_fuse ? "split_fuse" : "static_batch";
  eo.token_budget = o.budget;
  eo.max_seqs = o.max_seqs;
  eo.block_size = o.block_size;
  eo.prefix_caching = v.prefix_caching && o.prefix_caching;
  eo.batch_invariant = v.batch_invariant;
  eo.kv_blocks = o.num_blocks;
  eo.max_queue = max_queue;
  eo.threads = o.threads;
  eo.dtype = v.dtype;
  return zf::actors::make_engine(zf::lm_weights_of(ms.cfg, ms.flat.data(), ms.name), ms.tok, eo);
}

// ---- workload ------------------------------------------------------------------------------

int length_dist::draw(std::mt19937_64& g) const {
  std::normal_distribution<double> d(mean, 0.3 * mean);
  return std::clamp(int(std::lround(d(g))), lo, hi);
}

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

// ---- driving an engine ---------------------------------------------------------------------

void tracker::reset(std::size_t n) {
  finished.assign(n, -1);
  n_finished = 0;
}

void tracker::on_finish(int idx) {
  {
    std::lock_guard<std::mutex> l(mu);
    finished[n_finished++] = idx;
  }
  cv.notify_one();
}

// The sinks run on the engine's thread: they only take timestamps and count tokens.
static zf::serve::event_sink make_sink(std::shared_ptr<run_state> st, int idx) {
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

run_output drive(completion_backend& be, std::vector<request_spec> reqs, int clients,
                 double timeout_s) {
  const int n = int(reqs.size());
  run_output out;
  out.st = std::make_shared<run_state>();
  auto& recs = out.st->recs;
  auto& tr = out.st->tr;
  recs.assign(n, record{});
  tr.reset(n);
  std::vector<zf::serve::event_sink> sinks;  // built before the clock starts
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
  out.end = clk::now();
  return out;
}

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

// ---- one policy run ------------------------------------------------------------------------

static json summarize(const run_output& out, const std::vector<request_spec>& reqs,
                      const calibration& cal, const sla_spec& sla, const variant& v) {
  const int n = int(out.recs().size());
  std::vector<double> ttft, tpot;
  int completed = 0, rejected = 0, not_sent = 0, failed = 0, met = 0, met_ttft = 0, met_gen = 0;
  long long out_tokens = 0;
  clk::time_point first_arrival = out.recs().empty() ? out.start : out.recs()[0].arrival;
  clk::time_point last_finish{};
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
    out_tokens += r.tokens;
    if (r.done) last_finish = std::max(last_finish, r.finish);
    if (!r.done || r.reason != finish_reason::length || r.tokens != reqs[i].max_tokens) {
      ++failed;
      continue;
    }
    ++completed;
    double t_first = msec(r.first - r.arrival);
    ttft.push_back(t_first);
    double gen_s = secs(r.finish - r.first);
    if (r.tokens > 1) tpot.push_back(1000.0 * gen_s / (r.tokens - 1));
    bool ok_ttft =
        t_first <= sla.ttft_factor * cal.prefill_ms(reqs[i].prompt_len) + sla.ttft_const_ms;
    bool ok_gen = r.tokens <= 1 || (r.tokens - 1) / std::max(gen_s, 1e-9) >= sla.min_tok_per_s;
    met_ttft += ok_ttft;
    met_gen += ok_gen;
    met += ok_ttft && ok_gen;
  }
  // Nothing finished (all rejected, or cancelled at the timeout): the run lasted until drive()
  // gave up, not zero seconds, so that every throughput below, and a floor of one request over
  // this span (serve.cpp's comparisons), stays finite and honest.
  if (last_finish == clk::time_point{}) last_finish = out.end;
  double span = std::max(secs(last_finish - first_arrival), 1e-3);
  auto pct = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return json{{"p50", num(percentile(v, 50))},
                {"p95", num(percentile(v, 95))},
                {"p99", num(percentile(v, 99))},
                {"mean", num(v.empty() ? std::nan("") : sum / double(v.size()))}};
  };
  return json{{"policy", v.name()},
              {"batch_invariant", v.batch_invariant},
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
static json engine_counters(const std::string& text) {
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
  auto be = make_backend(ms, o, v, std::max<int>(256, int(reqs.size())));
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
  double sum_len = 0;
  for (auto& r : reqs) sum_len += r.prompt_len;
  const int mean_len = reqs.empty() ? 0 : int(sum_len / double(reqs.size()));
  double solo = mean_len > 0 ? solo_ttft_ms(*be, g, mean_len, 2, ms.cfg.vocab_size) : std::nan("");
  std::vector<request_spec> copy = reqs;  // built before the clock starts
  json before = engine_counters(be->metrics_text());
  auto out = drive(*be, std::move(copy), o.clients, timeout_s);
  auto res = summarize(out, reqs, cal, sla, v);
  json after = engine_counters(be->metrics_text());
  for (auto& [k, x] : after.items())  // this run only
    if (before.contains(k)) x = x.get<double>() - before[k].get<double>();
  res["engine"] = after;
  res["solo_ttft_mean_prompt_ms"] = num(solo);
  res["mean_prompt_len"] = mean_len;
  be.reset();
  return res;
}

}  // namespace zf::bench_serve
