// Serving engine logic (see engine_core.hpp). Per step: scheduler plan -> block copies ->
// paged_model::forward over the plan's chunks -> scheduler.complete -> per sampled choice: sample,
// detokenize, stop checks, event. Tokens of a choice live in one vector reserved for prompt +
// max_tokens at submit, so the step loop does not allocate for them.
#include "runtime/serve/engine_core.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <utility>

#include "runtime/core/error.hpp"

namespace zf {

using serve::finish_reason;

struct engine_core::request {
  uint64_t id = 0;
  serve::event_sink sink;
  clock::time_point arrival;
  int prompt_tokens = 0, max_tokens = 0;
  bool ignore_eos = false;
  std::vector<std::unique_ptr<choice>> choices;
  int live = 0;  // choices not finished
};

struct engine_core::choice {
  request* req = nullptr;
  int index = 0;
  uint64_t seq = 0;
  std::vector<int> tokens;  // prompt + generated
  int generated = 0;
  sampler samp;
  logit_penalties pen;  // off (empty) unless the request set a penalty or logit_bias
  text_stream text;
  bool done = false;
  std::string error;  // finish_reason::error: why
  clock::time_point last_token;
  choice(const sampling_params& p, std::vector<std::string> stops, std::span<const int> prompt,
         int max_tokens)
      : samp(p), pen(p, prompt, max_tokens), text(std::move(stops)) {}
};

void histogram::observe(double v) {
  for (std::size_t i = 0; i < bounds.size(); ++i)
    if (v <= bounds[i]) ++counts[i];
  ++counts.back();
  sum += v;
  ++total;
}

namespace {

int blocks_for(const model_spec& c, const engine_core_options& o) {
  if (o.num_blocks > 0) return o.num_blocks;
  const int bs = o.sched.block_size;
  const std::size_t per_ctx = static_cast<std::size_t>((c.max_positions + bs - 1) / bs);
  const std::size_t elem = o.kv == kv_dtype::bf16 ? 2 : sizeof(float);
  const std::size_t block_bytes = 2ull * c.n_layer * bs * c.kv_dim() * elem;
  const std::size_t want = per_ctx * static_cast<std::size_t>(o.sched.max_seqs);
  const std::size_t cap = std::max<std::size_t>(per_ctx, o.kv_budget_bytes / block_bytes);
  return static_cast<int>(std::min(want, cap));
}

int max_rows_for(const model_spec& c, const sched_options& s) {
  return s.policy == sched_policy::static_batch ? std::max(s.token_budget, c.max_positions)
                                                : s.token_budget;
}

std::unique_ptr<paged_model> make_runner(const lm_weights& w, const engine_core_options& o) {
  return std::make_unique<paged_model>(w, max_rows_for(w.cfg, o.sched),
                                       std::max(1, o.sched.max_seqs), o.threads, o.where);
}

const lm_weights& non_null(const std::shared_ptr<const lm_weights>& w) {
  if (!w) fail("engine: no weights given");
  return *w;
}

// The weights as the engine serves them: a copy in engine.dtype (bf16 or a ggml format; the
// caller's fp32 ones are released when it lets them go), else as given (fp32, or already
// converted).
std::shared_ptr<const lm_weights> in_dtype(std::shared_ptr<const lm_weights> w,
                                           const engine_core_options& o) {
  const lm_weights& v = non_null(w);
  if (o.where == device::cuda) {  // fp32 weights copied up (an update's too, between two steps)
    if (v.store.where() == device::cuda) return w;
    if (o.dtype != weight_dtype::fp32 || v.quant)
      fail("engine.device = cuda serves fp32 weights for now, not bf16, ggml or quantized ones");
    return std::make_shared<const lm_weights>(copy_lm_weights(v.cfg, v.store.data(), o.where));
  }
  if (o.dtype == weight_dtype::fp32 || is_bf16(v)) return w;
  kernels::ggml_format f{};  // converted already (serve --dtype q4_0 does it in place)
  if (ggml_format_of(o.dtype, f) && v.quant && v.quant->scheme == "gguf" && v.quant->head &&
      v.quant->head->ggml.fmt == f)
    return w;  // anything else quantized is refused by name below
  return serving_weights_of(v, o.dtype, "engine.dtype (--dtype)");
}

void histogram_text(std::string& out, const std::string& name, const std::string& help,
                    const histogram& h) {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  for (std::size_t i = 0; i < h.bounds.size(); ++i)
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], h.counts[i]);
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, h.counts.back(),
                     name, h.sum, name, h.total);
}

}  // namespace

std::string engine_stats::text(const std::string& model) const {
  std::lock_guard lk(mu);
  std::string o;
  auto gauge = [&](const char* name, const char* help, double v) {
    o += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{}{{model=\"{}\"}} {}\n", name, help, name,
                     name, model, v);
  };
  auto counter = [&](const char* name, const char* help, double v) {
    o += fmt::format("# HELP {} {}\n# TYPE {} counter\n{}{{model=\"{}\"}} {}\n", name, help, name,
                     name, model, v);
  };
  gauge("zeroflow_queue_depth", "Requests waiting for admission.", waiting);
  gauge("zeroflow_running_sequences", "Sequences holding KV blocks.", running);
  gauge("zeroflow_kv_blocks_used", "KV cache blocks in use.", blocks_used);
  gauge("zeroflow_kv_blocks_total", "KV cache blocks in the pool.", blocks_total);
  gauge("zeroflow_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.",
        blocks_total ? double(blocks_used) / blocks_total : 0.0);
  gauge("zeroflow_generation_tokens_per_second", "Generated tokens per second (recent window).",
        tokens_per_s);
  counter("zeroflow_prompt_tokens_total", "Prompt tokens computed.", double(prompt_tokens));
  counter("zeroflow_generation_tokens_total", "Tokens generated.", double(generated_tokens));
  counter("zeroflow_engine_steps_total", "Forward passes run.", double(steps));
  counter("zeroflow_preemptions_total", "Sequences preempted for KV space.", double(preemptions));
  counter("zeroflow_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
          double(cache_queries));
  counter("zeroflow_prefix_cache_hits_total", "Prompt tokens found in the prefix cache.",
          double(cache_hits));
  gauge("zeroflow_weights_version",
        "Version of the weights served (0: those the server started with).",
        double(weights_version));
  counter("zeroflow_weight_updates_total", "Weight updates swapped in.", double(weight_updates));
  o += "# HELP zeroflow_request_finished_total Finished choices by reason.\n"
       "# TYPE zeroflow_request_finished_total counter\n";
  for (int r = 1; r < 5; ++r)
    o += fmt::format("zeroflow_request_finished_total{{model=\"{}\",reason=\"{}\"}} {}\n", model,
                     serve::to_string(static_cast<finish_reason>(r)), finished[r]);
  histogram_text(o, "zeroflow_time_to_first_token_seconds", "Time to first token.", ttft);
  histogram_text(o, "zeroflow_time_per_output_token_seconds", "Time between output tokens.", tpot);
  histogram_text(o, "zeroflow_step_tokens", "Tokens per forward pass.", step_tokens);
  return o;
}

serve::engine_snapshot engine_stats::snapshot() const {
  static_assert(sizeof finished / sizeof finished[0] == serve::num_finish_reasons);
  auto copy = [](const histogram& h) {
    return serve::histogram_snapshot{h.bounds, h.counts, h.sum, h.total};
  };
  std::lock_guard lk(mu);
  serve::engine_snapshot s;
  s.waiting = waiting, s.running = running;
  s.blocks_used = blocks_used, s.blocks_total = blocks_total;
  s.weights_version = weights_version;
  s.prompt_tokens = prompt_tokens, s.generated_tokens = generated_tokens;
  s.steps = steps, s.preemptions = preemptions;
  s.cache_queries = cache_queries, s.cache_hits = cache_hits;
  for (int r = 0; r < serve::num_finish_reasons; ++r) s.finished[r] = finished[r];
  s.weight_updates = weight_updates;
  s.ttft = copy(ttft);
  s.tpot = copy(tpot);
  return s;
}

engine_core::engine_core(std::shared_ptr<const lm_weights> w, const tokenizer& tok,
                         const engine_core_options& o)
    : w_(in_dtype(std::move(w), o)),
      cfg_(non_null(w_).cfg),
      tok_(tok),
      o_(o),
      pool_(blocks_for(cfg_, o), o.sched.prefix_caching ? o.sched.block_size : 0),
      kv_(cfg_.n_layer, pool_.num_blocks(), o.sched.block_size, cfg_.kv_dim(), o.kv, o.where),
      sched_(o.sched, pool_),
      runner_(make_runner(*w_, o)) {
  // Every running sequence decodes each step: more of them than the budget would starve some.
  if (o.sched.max_seqs > o.sched.token_budget)
    fail(
        "engine: max_seqs ({}) must not exceed the token budget ({}): every running sequence "
        "needs one token of each step",
        o.sched.max_seqs, o.sched.token_budget);
  chunks_.reserve(static_cast<std::size_t>(o.sched.max_seqs) + 8);
  top_ids_.reserve(serve::max_logprobs);
  penalized_.resize(static_cast<std::size_t>(cfg_.vocab_size));
  stats_.blocks_total = pool_.num_blocks();
  window_start_ = clock::now();
}

engine_core::~engine_core() = default;

serve::submit_result engine_core::validate(const serve::completion_request& req) const {
  const model_spec& c = cfg_;
  auto bad = [](std::string m) { return serve::submit_result{0, 400, 0, std::move(m)}; };
  const int P = static_cast<int>(req.prompt.size());
  if (P < 1) return bad("the prompt is empty");
  if (req.max_tokens < 1)
    return bad(fmt::format("max_tokens must be >= 1, got {}", req.max_tokens));
  if (req.n < 1) return bad(fmt::format("n must be >= 1, got {}", req.n));
  if (P + req.max_tokens > c.max_positions)
    return bad(fmt::format(
        "This model's maximum context length is {} tokens. However, you requested {} tokens "
        "({} in the prompt, {} in the completion).",
        c.max_positions, P + req.max_tokens, P, req.max_tokens));
  for (int t : req.prompt)
    if (t < 0 || t >= c.vocab_size)
      return bad(
          fmt::format("prompt token id {} is outside the vocabulary of {}", t, c.vocab_size));
  if (req.n > o_.sched.max_seqs)
    return bad(fmt::format("n = {} exceeds the engine's max_seqs {}", req.n, o_.sched.max_seqs));
  if (req.sampling.logprobs < -1 || req.sampling.logprobs > serve::max_logprobs)
    return bad(fmt::format("logprobs must be -1 (off) or between 0 and {}, got {}",
                           serve::max_logprobs, req.sampling.logprobs));
  const sampling_params& sp = req.sampling;
  for (auto [name, x] : {std::pair{"presence_penalty", sp.presence_penalty},
                         std::pair{"frequency_penalty", sp.frequency_penalty}})
    if (!(x >= -2 && x <= 2))  // NaN fails too
      return bad(fmt::format("{} must be between -2 and 2, got {}", name, x));
  if (!(sp.repetition_penalty > 0) || !std::isfinite(sp.repetition_penalty))
    return bad(fmt::format("repetition_penalty must be > 0, got {}", sp.repetition_penalty));
  if (sp.logit_bias.size() > static_cast<std::size_t>(serve::max_logit_bias))
    return bad(fmt::format("logit_bias has {} entries, at most {}", sp.logit_bias.size(),
                           serve::max_logit_bias));
  for (auto [t, b] : sp.logit_bias) {
    if (t < 0 || t >= c.vocab_size)
      return bad(
          fmt::format("logit_bias token id {} is outside the vocabulary of {}", t, c.vocab_size));
    if (!(b >= -100 && b <= 100))
      return bad(fmt::format("logit_bias for token {} must be between -100 and 100, got {}", t, b));
  }
  const int bs = o_.sched.block_size;
  const int need = (P + req.max_tokens + bs - 1) / bs * req.n;
  if (need > pool_.num_blocks())
    return bad(fmt::format("the request needs {} KV blocks but the pool has {}", need,
                           pool_.num_blocks()));
  return {0, 200, 0, {}};
}

serve::submit_result engine_core::submit(uint64_t id, serve::completion_request req,
                                         serve::event_sink sink, clock::time_point arrival) {
  if (auto v = validate(req); v.status != 200) return v;
  const int P = static_cast<int>(req.prompt.size());
  auto bad = [](std::string m) { return serve::submit_result{0, 400, 0, std::move(m)}; };
  auto r = std::make_shared<request>();
  r->id = id;
  r->sink = std::move(sink);
  r->arrival = arrival;
  r->prompt_tokens = P;
  r->max_tokens = req.max_tokens;
  r->ignore_eos = req.ignore_eos;
  std::vector<uint64_t> ids;
  for (int i = 0; i < req.n; ++i) {
    sampling_params sp = req.sampling;
    sp.seed += static_cast<uint64_t>(i);
    auto ch = std::make_unique<choice>(sp, req.stop, req.prompt, req.max_tokens);
    ch->req = r.get();
    ch->index = i;
    ch->seq = next_seq_++;
    ch->tokens.reserve(static_cast<std::size_t>(P + req.max_tokens));
    ch->tokens = req.prompt;
    ids.push_back(ch->seq);
    r->choices.push_back(std::move(ch));
  }
  try {
    sched_.add(ids, std::span<const int>(req.prompt));
  } catch (const error& e) {
    return bad(e.what());
  }
  for (auto& ch : r->choices) seqs_[ch->seq] = ch.get();
  r->live = req.n;
  requests_[id] = std::move(r);
  return {id, 200, 0, {}};
}

void engine_core::emit(choice& c, std::string text, std::vector<int> tokens, finish_reason f,
                       std::vector<serve::position_logprobs> logprobs) {
  serve::completion_event e;
  e.request_id = c.req->id;
  e.index = c.index;
  e.text = std::move(text);
  e.tokens = std::move(tokens);
  e.logprobs = std::move(logprobs);
  e.finish = f;
  e.weights_version = version_.load(std::memory_order_relaxed);
  if (f != finish_reason::none) {
    e.prompt_tokens = c.req->prompt_tokens;
    e.completion_tokens = c.generated;
    e.error = c.error;
  }
  if (c.req->sink) c.req->sink(e);
}

// Final event of a choice; frees its blocks, and the request once its last choice ended.
void engine_core::end_choice(choice& c, finish_reason f, std::string text, std::vector<int> tokens,
                             std::vector<serve::position_logprobs> logprobs) {
  if (c.done) return;
  c.done = true;
  sched_.finish(c.seq);
  seqs_.erase(c.seq);
  {  // gauges first, so whoever sees the final event also sees the blocks freed
    std::lock_guard lk(stats_.mu);
    ++stats_.finished[static_cast<int>(f)];
    stats_.waiting = sched_.num_waiting();
    stats_.running = sched_.num_running();
    stats_.blocks_used = pool_.num_used();
  }
  emit(c, std::move(text), std::move(tokens), f, std::move(logprobs));
  request* r = c.req;
  if (--r->live == 0) requests_.erase(r->id);  // destroys c
}

void engine_core::cancel(uint64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  auto keep = it->second;  // end_choice may erase the map entry
  for (auto& ch : keep->choices) end_choice(*ch, finish_reason::cancelled);
}

void engine_core::end_all(finish_reason f, const std::string& message) {
  std::vector<std::shared_ptr<request>> all;
  for (auto& [id, r] : requests_) all.push_back(r);
  for (auto& r : all) {
    for (auto& ch : r->choices) {
      if (ch->done) continue;
      ch->error = message;
      end_choice(*ch, f);
    }
  }
}

serve::position_logprobs engine_core::logprobs_of(const float* logits, int token, int k) {
  const int V = cfg_.vocab_size;
  const double lse = log_sum_exp(logits, V);
  auto lp = [&](int id) { return serve::token_logprob{id, static_cast<float>(logits[id] - lse)}; };
  serve::position_logprobs out{lp(token), {}};
  top_k_ids(logits, V, k, top_ids_);  // within top_ids_'s reserved capacity: no allocation
  out.top.reserve(top_ids_.size());
  for (int id : top_ids_) out.top.push_back(lp(id));
  return out;
}

void engine_core::take_token(choice& c, int token, const float* logits, clock::time_point now) {
  const double since =
      std::chrono::duration<double>(now - (c.generated == 0 ? c.req->arrival : c.last_token))
          .count();
  {
    std::lock_guard lk(stats_.mu);
    (c.generated == 0 ? stats_.ttft : stats_.tpot).observe(since);
    ++stats_.generated_tokens;
  }
  ++window_tokens_;
  c.last_token = now;
  c.tokens.push_back(token);
  ++c.generated;
  // Each event covers exactly this token, so its logprobs are this one entry (or none). A stop
  // string ends the choice at this token: nothing after it is sampled or reported.
  std::vector<serve::position_logprobs> lp;
  if (const int k = c.samp.params().logprobs; k >= 0) lp.push_back(logprobs_of(logits, token, k));
  const bool eos = !c.req->ignore_eos && cfg_.eos_id >= 0 && token == cfg_.eos_id;
  if (eos) {
    end_choice(c, finish_reason::stop, c.text.finish(), {token}, std::move(lp));
    return;
  }
  std::string piece = c.text.push(tok_.token_bytes(token));
  if (c.text.stopped()) {
    end_choice(c, finish_reason::stop, std::move(piece), {token}, std::move(lp));
    return;
  }
  if (c.generated >= c.req->max_tokens) {
    end_choice(c, finish_reason::length, piece + c.text.finish(), {token}, std::move(lp));
    return;
  }
  emit(c, std::move(piece), {token}, finish_reason::none, std::move(lp));
}

void engine_core::observe_steps(serve::completion_backend::step_observer f) {
  auto p =
      f ? std::make_shared<const serve::completion_backend::step_observer>(std::move(f)) : nullptr;
  std::lock_guard lock(observer_mu_);
  observer_ = std::move(p);
}

bool engine_core::step() {
  const auto t0 = clock::now();
  bool worked = false;
  const bool more = [&] {
    step_plan plan = sched_.schedule();
    if (plan.empty()) {
      publish_stats(0);
      return false;
    }
    worked = true;
    return run_plan(std::move(plan));
  }();
  if (worked) {
    std::shared_ptr<const serve::completion_backend::step_observer> obs;
    {
      std::lock_guard lock(observer_mu_);
      obs = observer_;
    }
    if (obs) (*obs)(t0, clock::now());
  }
  return more;
}

bool engine_core::run_plan(step_plan plan) {
  for (const block_copy& cp : plan.copies) kv_.copy_block(cp.src, cp.dst, cp.rows);
  chunks_.clear();
  int prompt_rows = 0;
  for (const sched_chunk& sc : plan.chunks) {
    choice* c = seqs_.at(sc.seq);
    chunks_.push_back({.tokens = c->tokens.data() + sc.start,
                       .start = sc.start,
                       .len = sc.len,
                       .blocks = sched_.blocks(sc.seq).data(),
                       .logits = !sc.sample_for.empty()});
    if (sc.start < c->req->prompt_tokens)
      prompt_rows += std::min(sc.len, c->req->prompt_tokens - sc.start);
  }
  runner_->forward(chunks_, kv_);
  sched_.complete(plan);
  const auto now = clock::now();
  int j = 0;
  for (const sched_chunk& sc : plan.chunks) {
    if (sc.sample_for.empty()) continue;
    const float* logits = runner_->logits(j++);
    for (uint64_t id : sc.sample_for) {
      auto it = seqs_.find(id);
      if (it == seqs_.end()) continue;
      choice& c = *it->second;
      const int V = cfg_.vocab_size;
      // Penalties and logit_bias reshape a copy: the row is shared by every choice in
      // sample_for (the n choices of a prefill), and logprobs (take_token) report the raw
      // model's log_softmax, as vLLM does. No penalty: no copy.
      const float* row = logits;
      if (c.pen.active()) {
        std::copy_n(logits, V, penalized_.data());
        c.pen.apply(penalized_.data(), V);
        row = penalized_.data();
      }
      const int token = c.samp.sample(row, V);
      c.pen.accept(token);  // before take_token: ending the choice there destroys c
      take_token(c, token, logits, now);
    }
  }
  {
    std::lock_guard lk(stats_.mu);
    stats_.prompt_tokens += static_cast<uint64_t>(prompt_rows);
    stats_.preemptions += plan.preempted.size();
    stats_.step_tokens.observe(plan.tokens);
    ++stats_.steps;
  }
  publish_stats(plan.tokens);
  return true;
}

void engine_core::check_weights(const lm_weights& w) const {
  const model_spec& a = cfg_;
  const model_spec& b = w.cfg;
  if (a.arch != b.arch)
    fail("weights of another architecture: arch is {} but the served model's is {}",
         b.arch == model_arch::llama ? "llama" : "gpt2",
         a.arch == model_arch::llama ? "llama" : "gpt2");
  const std::pair<const char*, std::pair<int, int>> fields[] = {
      {"vocab_size", {b.vocab_size, a.vocab_size}},
      {"hidden", {b.hidden, a.hidden}},
      {"n_layer", {b.n_layer, a.n_layer}},
      {"n_head", {b.n_head, a.n_head}},
      {"n_kv_head", {b.n_kv_head, a.n_kv_head}},
      {"head_dim", {b.head_dim, a.head_dim}},
      {"intermediate", {b.intermediate, a.intermediate}},
      {"max_positions", {b.max_positions, a.max_positions}},
  };
  for (const auto& [name, v] : fields)
    if (v.first != v.second)
      fail("weights of another shape: {} is {} but the served model's is {}", name, v.first,
           v.second);
  if (!w.tok_emb || !w.head || !w.normf_w || w.layers.size() != static_cast<std::size_t>(b.n_layer))
    fail("incomplete weights: {} layers of {}, embedding, head or final norm missing",
         w.layers.size(), b.n_layer);
}

uint64_t engine_core::update_weights(std::shared_ptr<const lm_weights> w,
                                     std::optional<uint64_t> version) {
  check_weights(non_null(w));
  const uint64_t served = version_.load();
  if (!version && served == UINT64_MAX) fail("the weights version cannot go past {}", served);
  const uint64_t v = version.value_or(served + 1);
  if (v <= served) fail("weights version {} is not newer than the served version {}", v, served);
  w = in_dtype(std::move(w), o_);     // bf16 serving: converted here, between two steps
  auto runner = make_runner(*w, o_);  // the last thing that can fail: nothing changed yet
  const int preempted = sched_.preempt_all();
  pool_.clear_cache();
  runner_ = std::move(runner);  // the old runner reads the old weights: it goes first
  w_ = std::move(w);
  version_.store(v);
  {
    std::lock_guard lk(stats_.mu);
    stats_.weights_version = v;
    ++stats_.weight_updates;
    stats_.preemptions += static_cast<uint64_t>(preempted);
  }
  publish_stats(0);
  return v;
}

void engine_core::publish_stats(int) {
  const auto now = clock::now();
  const double dt = std::chrono::duration<double>(now - window_start_).count();
  std::lock_guard lk(stats_.mu);
  stats_.waiting = sched_.num_waiting();
  stats_.running = sched_.num_running();
  stats_.blocks_used = pool_.num_used();
  stats_.cache_queries = sched_.cache_queries();
  stats_.cache_hits = sched_.cache_hits();
  if (dt >= 2.0 || (dt > 0 && window_tokens_ == 0)) {
    stats_.tokens_per_s = window_tokens_ / dt;
    window_start_ = now;
    window_tokens_ = 0;
  }
}

}  // namespace zf
