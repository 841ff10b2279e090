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
//     After the runs the same burst measures the capacity again: estimates more than 20% apart
//     (--disturbed-above) mean the machine's load changed under the benchmark, and the output
//     says so (a WARNING line, "calibration_disturbed" in the RESULT, the load averages).
//     --invariant-cost adds split_fuse under engine.batch_invariant on the same
//     requests, and its own capacity burst right after the default one: the throughput cost of
//     batch invariance is the ratio of the two capacities.
//   --mode single: batch-1 latencies comparable with shared/peers/torch_gpt_bench.py --mode infer:
//     decode ms/token (median over 64 greedy tokens after a 256-token prompt, 5 runs after 2
//     warm-up runs) and 256-token prefill latency (TTFT of a 256-token prompt with max_tokens 1,
//     median of 10 after 3 warm-up); with --batch-invariant under the invariant kernels, with
//     --invariant-cost both engines, each iteration on one then the other, and their ratios.
//
// The generator thread sleeps until each arrival on the steady clock; all per-request records
// and requests are built before the run; the sinks (on the engine's thread) only take
// timestamps and count tokens. Last line: "RESULT {json}". serve_load.cpp holds the load
// generator and statistics, serve_calibrate.cpp the calibration.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "bench/serve_load.hpp"

namespace {

using namespace zf::bench_serve;

std::string fmt3(const json& j) {
  auto f = [](const json& x) {
    return x.is_null() ? std::string("-") : fmt::format("{:.1f}", x.get<double>());
  };
  return f(j["p50"]) + " / " + f(j["p95"]) + " / " + f(j["p99"]);
}

std::string fmt_ratio(double x, const char* suffix = "x") {  // NaN (no ratio): "-"
  return std::isfinite(x) ? fmt::format("{:.2f}{}", x, suffix) : std::string("-");
}

double get_num(const json& j) {  // null (a NaN written to JSON): NaN
  return j.is_number() ? j.get<double>() : std::nan("");
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

// ---- load mode -----------------------------------------------------------------------------

// Everything a load run fixes before its first policy run.
struct load_setup {
  load_setup(workload_spec w, model_setup ms, std::vector<variant> v)
      : w(std::move(w)), ms(std::move(ms)), variants(std::move(v)) {}
  workload_spec w;
  model_setup ms;
  std::vector<variant> variants;
  calibration cal;
  double cal_s = 0, rate = 0, timeout_s = 0, loadavg_start = 0;
  int n = 0;
  double mean_prompt = 0, mean_output = 0;
  sla_spec sla{};
  std::vector<request_spec> reqs;
};

std::vector<variant> load_variants(const options& o) {
  const bool inv = o.batch_invariant;
  std::vector<variant> v;
  if (!o.dtypes.empty()) {  // split_fuse once per weight dtype, the first one the baseline
    std::stringstream list(o.dtypes);
    for (std::string d; std::getline(list, d, ',');)
      v.push_back({policy_kind::split_fuse, true, inv, d});
    return v;
  }
  if (o.policy == "both" || o.policy == "split_fuse" || o.policy == "cache")
    v.push_back({policy_kind::split_fuse, true, inv});
  if (o.policy == "both" || o.policy == "static_batch")
    v.push_back({policy_kind::static_batch, true, inv});
  if (o.policy == "cache") v.push_back({policy_kind::split_fuse, false, inv});
  if (v.empty()) throw std::runtime_error("unknown --policy " + o.policy);
  if (o.invariant_cost) v.push_back({policy_kind::split_fuse, true, true});
  return v;
}

load_setup prepare_load(const options& o) {
  load_setup s(make_workload(o.workload), make_model(o.model, o.seed), load_variants(o));
  const auto& w = s.w;
  if (w.shared_prefix + w.prompt.hi + w.output.hi > s.ms.cfg.n_positions)
    throw std::runtime_error("workload does not fit the context");
  s.loadavg_start = loadavg_1min();
  auto t_cal = clk::now();
  s.cal = calibrate(s.ms, o, w, (o.clients <= 0 && o.rate <= 0) || o.invariant_cost);
  s.cal_s = secs(clk::now() - t_cal);
  s.rate = o.clients > 0 ? 0.0 : (o.rate > 0 ? o.rate : o.load * s.cal.capacity_rps);
  if (o.clients <= 0 && !(s.rate > 0))
    throw std::runtime_error("could not measure the saturation throughput; pass --rate");
  s.n = o.requests;
  if (s.n <= 0)
    s.n = o.clients > 0 ? 8 * o.clients : std::max(16, int(std::lround(s.rate * o.duration)));
  s.sla = {o.ttft_factor, o.ttft_steps * s.cal.t_budget_ms,
           1000.0 / (o.tpot_steps * s.cal.t_budget_ms)};
  s.reqs = make_requests(w, s.n, s.rate, o.seed, s.ms.cfg.vocab_size);
  double span = s.reqs.empty() ? 0 : s.reqs.back().arrival_s;
  s.timeout_s = o.timeout > 0 ? o.timeout : std::max(120.0, 5 * span);
  long long ptoks = 0, otoks = 0;
  for (auto& r : s.reqs) ptoks += r.prompt_len, otoks += r.max_tokens;
  s.mean_prompt = double(ptoks) / s.n;
  s.mean_output = double(otoks) / s.n;
  return s;
}

void print_setup(const options& o, const load_setup& s) {
  const auto& w = s.w;
  const auto& cal = s.cal;
  std::string arrivals =
      o.clients > 0 ? fmt::format("closed loop, {} clients", o.clients)
                    : (o.rate > 0 ? fmt::format("Poisson {:.2f} req/s", s.rate)
                                  : fmt::format("Poisson {:.2f} req/s ({:.2f} x split_fuse "
                                                "saturation throughput {:.2f} req/s)",
                                                s.rate, o.load, cal.capacity_rps));
  fmt::print(
      "bench_serve: model {} ({} layers, {} heads, {} wide, vocab {}, context {}), threads {}, "
      "loadavg {:.2f}\n",
      o.model, s.ms.cfg.n_layer, s.ms.cfg.n_head, s.ms.cfg.n_embd, s.ms.cfg.vocab_size,
      s.ms.cfg.n_positions, o.threads, s.loadavg_start);
  fmt::print(
      "workload {}: {} requests, prompt ~N({:.0f}, 30%) in [{}, {}] (mean {:.0f}), output "
      "~N({:.0f}, 30%) in [{}, {}] (mean {:.0f}); {}; seed {}\n",
      w.name, s.n, w.prompt.mean, w.prompt.lo, w.prompt.hi, s.mean_prompt, w.output.mean,
      w.output.lo, w.output.hi, s.mean_output, arrivals, o.seed);
  fmt::print("engine: token_budget {}, max_seqs {}, block_size {}{}\n", o.budget, o.max_seqs,
             o.block_size, o.batch_invariant ? ", batch-invariant" : "");
  std::string pre;
  for (auto& [len, t] : cal.prefill) pre += fmt::format(" {}:{:.1f}", len, t);
  std::string cap;
  if (cal.burst > 0)
    cap = fmt::format("; split_fuse saturation throughput {:.2f} req/s (burst of {})",
                      cal.capacity_rps, cal.burst);
  if (cal.capacity_invariant_rps > 0)
    cap += fmt::format(", {:.2f} req/s batch-invariant", cal.capacity_invariant_rps);
  fmt::print(
      "calibration ({:.1f} s): solo prefill ms by prompt length{}; solo decode {:.2f} ms/token{}\n",
      s.cal_s, pre, cal.tpot_solo_ms, cap);
  fmt::print(
      "SLA: prompt TTFT <= {:g} x solo prefill(prompt) + {:g} x T_b ({:.1f} ms), with T_b = "
      "{:.1f} ms the solo {}-token prefill (one full step); e.g. {:.0f} ms for a {}-token prompt; "
      "generation >= {:.1f} tokens/s per request after its first token ({:g} x T_b = {:.1f} ms "
      "per token)\n",
      s.sla.ttft_factor, o.ttft_steps, s.sla.ttft_const_ms, cal.t_budget_ms, o.budget,
      s.sla.ttft_factor * cal.prefill_ms(int(w.prompt.mean)) + s.sla.ttft_const_ms,
      int(w.prompt.mean), s.sla.min_tok_per_s, o.tpot_steps, 1000.0 / s.sla.min_tok_per_s);
  std::fflush(stdout);
}

void print_run(const json& r) {
  fmt::print(
      "  {}: solo TTFT of a {}-token prompt {:.1f} ms; {} done, {} rejected, {} failed{} in "
      "{:.1f} s; SLA met {} (TTFT {}, generation {})\n",
      r["policy"].get<std::string>(), r["mean_prompt_len"].get<int>(),
      get_num(r["solo_ttft_mean_prompt_ms"]), r["completed"].get<int>(), r["rejected"].get<int>(),
      r["failed"].get<int>(), r["timed_out"].get<bool>() ? " (timed out)" : "",
      r["duration_s"].get<double>(), r["sla_met"].get<int>(), r["sla_met_ttft"].get<int>(),
      r["sla_met_generation"].get<int>());
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
}

void print_table(const json& results) {
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
}

// a (the first variant) against b; every ratio > 1 favours a. A baseline that met no SLA has an
// effective throughput of 0 and the ratio would be infinite (a loaded machine did that): it is
// taken against a floor of one request over b's run instead, a finite lower bound, flagged.
json compare(const json& a, const json& b) {
  const double span_b = b["duration_s"].get<double>();
  const double eff_b = std::max(b["effective_throughput"].get<double>(), 1.0 / span_b);
  const double eff = ratio(a["effective_throughput"].get<double>(), eff_b);
  const double req =
      ratio(a["request_throughput"].get<double>(), b["request_throughput"].get<double>());
  const double ttft = ratio(get_num(b["ttft_ms"]["p50"]), get_num(a["ttft_ms"]["p50"]));
  const int met_b = b["sla_met"].get<int>();
  fmt::print("{} / {}: effective throughput {}{}{}, request throughput {}, TTFT p50 {}\n",
             a["policy"].get<std::string>(), b["policy"].get<std::string>(),
             met_b > 0 ? "" : ">= ", fmt_ratio(eff),
             met_b > 0 ? std::string()
                       : fmt::format(" ({} met no SLA: against a floor of 1 request in its "
                                     "{:.1f} s)",
                                     b["policy"].get<std::string>(), span_b),
             fmt_ratio(req), fmt_ratio(ttft, "x lower"));
  return json{{"a", a["policy"]},
              {"b", b["policy"]},
              {"effective_throughput_ratio", num(eff)},
              {"effective_throughput_ratio_is_lower_bound", met_b == 0},
              {"b_sla_met", met_b},
              {"request_throughput_ratio", num(req)},
              {"ttft_p50_ratio", num(ttft)}};
}

// Measures the capacity again after the runs: a machine whose load changed under the benchmark
// (other jobs on a shared box) shows as two estimates that disagree, and the figures of such a
// run are suspect, so it says so rather than print them as if they were clean.
json recheck_capacity(const options& o, const load_setup& s) {
  const double before = s.cal.capacity_rps;
  const double after = burst_capacity(s.ms, o, s.w, capacity_variant(o, o.batch_invariant));
  const double load_end = loadavg_1min();
  const double spread = ratio(std::max(before, after), std::min(before, after)) - 1;
  const bool disturbed = !(spread <= o.disturbed_above);  // NaN (a burst measured nothing): yes
  fmt::print(
      "capacity check: split_fuse saturation throughput {:.2f} req/s before the runs, {:.2f} "
      "after ({:+.0f}%); loadavg {:.2f} at start, {:.2f} at end\n",
      before, after, 100 * (ratio(after, before) - 1), s.loadavg_start, load_end);
  if (disturbed)
    fmt::print(
        "WARNING: calibration disturbed: the two capacity estimates differ by more than {:.0f}% "
        "(loadavg {:.2f} -> {:.2f}); the machine's load changed under the benchmark, so the "
        "offered load, the SLA and every figure of this workload are suspect\n",
        100 * o.disturbed_above, s.loadavg_start, load_end);
  return json{{"capacity_before", before},
              {"capacity_after", after},
              {"disturbed", disturbed},
              {"loadavg_start", num(s.loadavg_start)},
              {"loadavg_end", num(load_end)}};
}

// The throughput cost of batch invariance: default over invariant saturation throughput.
json invariant_cost(const calibration& cal) {
  const double cost = ratio(cal.capacity_rps, cal.capacity_invariant_rps);
  fmt::print(
      "batch-invariant cost: split_fuse saturation throughput {:.2f} req/s, {:.2f} req/s "
      "batch-invariant: {} slower\n",
      cal.capacity_rps, cal.capacity_invariant_rps, fmt_ratio(cost));
  return json{{"capacity_rps", cal.capacity_rps},
              {"capacity_invariant_rps", cal.capacity_invariant_rps},
              {"throughput", num(cost)}};
}

json load_result(const options& o, const load_setup& s, const json& results) {
  return json{{"mode", "load"},
              {"model", o.model},
              {"workload", s.w.name},
              {"requests", s.n},
              {"arrivals", o.clients > 0 ? "closed" : "poisson"},
              {"rate", s.rate},
              {"load", o.rate > 0 || o.clients > 0 ? json(nullptr) : json(o.load)},
              {"estimated_capacity", s.cal.capacity_rps},
              {"clients", o.clients},
              {"seed", o.seed},
              {"token_budget", o.budget},
              {"max_seqs", o.max_seqs},
              {"threads", o.threads},
              {"batch_invariant", o.batch_invariant},
              {"mean_prompt", s.mean_prompt},
              {"mean_output", s.mean_output},
              {"calibration",
               {{"prefill_ms", s.cal.prefill},
                {"t_budget_ms", s.cal.t_budget_ms},
                {"tpot_solo_ms", s.cal.tpot_solo_ms},
                {"capacity_burst", s.cal.burst},
                {"capacity_rps", s.cal.capacity_rps},
                {"capacity_invariant_rps", s.cal.capacity_invariant_rps}}},
              {"sla",
               {{"ttft_factor", s.sla.ttft_factor},
                {"ttft_const_ms", s.sla.ttft_const_ms},
                {"min_tokens_per_s", s.sla.min_tok_per_s}}},
              {"policies", results}};
}

int run_load(const options& o) {
  const load_setup s = prepare_load(o);
  print_setup(o, s);
  json results = json::array();
  for (const variant& v : s.variants) {
    results.push_back(run_policy(s.ms, o, v, s.reqs, s.cal, s.sla, s.timeout_s));
    print_run(results.back());
  }
  print_table(results);
  json res = load_result(o, s, results);
  fmt::print("\n");
  json cmp = json::array();
  for (std::size_t i = 1; i < results.size(); ++i) cmp.push_back(compare(results[0], results[i]));
  res["comparisons"] = cmp;
  if (!cmp.empty()) {  // the first two variants, as before --invariant-cost existed
    res["effective_throughput_ratio"] = cmp[0]["effective_throughput_ratio"];
    res["baseline_sla_met"] = cmp[0]["b_sla_met"];
  }
  if (o.invariant_cost) res["invariant_cost"] = invariant_cost(s.cal);
  if (s.cal.burst > 0) {
    res["capacity_check"] = recheck_capacity(o, s);
    res["calibration_disturbed"] = res["capacity_check"]["disturbed"];
  }
  return emit_result(o, res);
}

// ---- single stream -------------------------------------------------------------------------

// Per-token decode intervals (ms) of one run of prompt with max_tokens N: the gaps between
// events after the first token.
std::vector<double> decode_intervals(completion_backend& be, const completion_request& prompt,
                                     int N) {
  struct stamps {
    std::vector<std::pair<clk::time_point, int>> ev;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  } st;
  st.ev.reserve(N + 4);
  completion_request req = prompt;
  req.max_tokens = N;
  auto res = be.submit(std::move(req), [&st](const completion_event& e) {
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
  std::vector<double> per_tok;
  for (std::size_t i = 1; i < st.ev.size(); ++i) {
    double d = msec(st.ev[i].first - st.ev[i - 1].first) / st.ev[i].second;
    for (int k = 0; k < st.ev[i].second; ++k) per_tok.push_back(d);
  }
  return per_tok;
}

// One engine's single-stream samples.
struct single_engine {
  variant v;
  std::unique_ptr<completion_backend> be;
  std::vector<double> prefill_ms, decode_ms;
};

// Prefill (TTFT of the prompt, max_tokens 1) and decode samples of every engine. With two
// engines (--invariant-cost) each iteration runs on one then the other, so that a machine whose
// load changes slows both alike and their ratio, the cost, stays meaningful.
void sample_single(const options& o, std::vector<single_engine>& engines,
                   const completion_request& prompt) {
  for (int i = 0; i < o.prefill_warmup + o.prefill_iters; ++i)
    for (auto& e : engines) {
      std::vector<request_spec> r(1);
      r[0].req = prompt;
      auto out = drive(*e.be, std::move(r), 0, 300);
      if (i >= o.prefill_warmup && out.recs()[0].tokens > 0)
        e.prefill_ms.push_back(msec(out.recs()[0].first - out.recs()[0].arrival));
    }
  for (int r = 0; r < o.single_warmup + o.single_runs; ++r)
    for (auto& e : engines) {
      auto d = decode_intervals(*e.be, prompt, o.single_tokens);
      if (r >= o.single_warmup) e.decode_ms.insert(e.decode_ms.end(), d.begin(), d.end());
    }
}

int run_single(const options& o) {
  auto ms = make_model(o.model, o.seed);
  policy_kind p = o.policy == "static_batch" ? policy_kind::static_batch : policy_kind::split_fuse;
  // No prefix cache: the repeated prompt would be served from it and prefill not measured.
  std::vector<variant> vs{{p, false, o.batch_invariant}};
  if (o.invariant_cost) vs.push_back({p, false, true});
  std::vector<single_engine> engines;
  for (auto& v : vs) engines.push_back({v, make_backend(ms, o, v, 256), {}, {}});
  std::mt19937_64 g(o.seed ^ 0x51691e);
  const completion_request prompt = make_request(g, o.single_prompt, 1, ms.cfg.vocab_size);
  sample_single(o, engines, prompt);

  auto figures = [](const single_engine& e) {
    const auto& pre = e.prefill_ms;
    return json{
        {"prefill_last_ms_median", num(median(pre))},
        {"prefill_ms_min", num(pre.empty() ? NAN : *std::min_element(pre.begin(), pre.end()))},
        {"decode_ms_per_token_median", num(median(e.decode_ms))},
        {"decode_tokens_per_s", num(ratio(1000.0, median(e.decode_ms)))}};
  };
  json res{{"mode", "single"},
           {"model", o.model},
           {"policy", variant{p}.name()},  // the policy alone, as the peer has none
           {"batch_invariant", o.batch_invariant},
           {"threads", o.threads},
           {"prompt_len", o.single_prompt},
           {"decode_tokens", o.single_tokens}};
  res.update(figures(engines[0]));
  for (auto& e : engines)
    fmt::print(
        "bench_serve single-stream, model {}, threads {}{}: prefill {} tokens (TTFT, max_tokens "
        "1) {:.1f} ms median; decode {:.2f} ms/token median ({} tokens x {} runs)\n",
        o.model, o.threads, e.v.batch_invariant ? ", batch-invariant" : "", o.single_prompt,
        median(e.prefill_ms), median(e.decode_ms), o.single_tokens, o.single_runs);
  if (engines.size() == 2) {  // slowdown factors: invariant over default, > 1 slower
    const double pre = ratio(median(engines[1].prefill_ms), median(engines[0].prefill_ms));
    const double dec = ratio(median(engines[1].decode_ms), median(engines[0].decode_ms));
    res["invariant"] = figures(engines[1]);
    res["invariant_cost_prefill"] = num(pre);
    res["invariant_cost_decode"] = num(dec);
    fmt::print("batch-invariant cost (interleaved runs): prefill {}, decode {} slower\n",
               fmt_ratio(pre), fmt_ratio(dec));
  }
  return emit_result(o, res);
}

void add_options(CLI::App& app, options& o) {
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
  app.add_option("--dtypes", o.dtypes,
                 "load: split_fuse once per weight dtype listed (engine.dtype: fp32, bf16, f16, "
                 "q8_0, q4_0), instead of --policy");
  app.add_flag("--batch-invariant", o.batch_invariant, "every engine under engine.batch_invariant");
  app.add_flag("--invariant-cost", o.invariant_cost,
               "also measure split_fuse under batch_invariant: load: on the same requests, and "
               "its saturation throughput; single: interleaved with the default engine");
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
  app.add_option("--disturbed-above", o.disturbed_above,
                 "warn when the capacity measured after the runs differs from the one before "
                 "by more than this fraction");
  app.add_option("--single-prompt", o.single_prompt,
                 "single mode: prompt tokens (prefill and decode)");
  app.add_option("--single-tokens", o.single_tokens, "single mode: decoded tokens per run");
  app.add_option("--single-runs", o.single_runs, "single mode: measured decode runs");
  app.add_option("--prefill-iters", o.prefill_iters, "single mode: measured prefills");
  app.add_option("--json", o.json_file, "also write the result here");
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App app{"bench_serve: serving benchmark over the in-process engine (FastGen methodology)"};
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  if (o.invariant_cost && o.batch_invariant) {
    std::cerr << "bench_serve: --invariant-cost compares with the default engine: drop "
                 "--batch-invariant\n";
    return 2;
  }
  try {
    return o.mode == "single" ? run_single(o) : run_load(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_serve: " << e.what() << "\n";
    return 1;
  }
}
