#pragma once
// The serving engine's logic, without actors or threads: requests in, one step at a time
// (schedule -> execute one ragged forward -> sample and check stops -> events out). The
// engine actor (actors/engine) owns one and calls it from its single thread; nothing here is
// thread-safe except what `engine_stats`, validate(), check_weights() and weights_version() say.
//
// Weights that change while serving (RLHF weight sync, as SGLang/veRL do it): update_weights()
// swaps in new weights between two steps, so no forward pass ever reads two versions; the old
// weights stay alive (shared_ptr) until the swap and are released by it. Two rules keep every
// token after the swap wholly a product of the new weights:
//   - the prefix cache is flushed: its blocks hold K/V the old weights computed;
//   - every running sequence is preempted for recompute (the scheduler's ordinary preemption):
//     its prompt and the tokens it generated so far are prefilled again under the new weights
//     before it samples its next token. Tokens generated before the swap stay as they were.
// The alternative, letting running sequences continue on their old K/V, would mix versions
// inside one sequence's attention; recompute costs one prefill per running sequence per update.
// Each event carries the version of the forward that made its tokens.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/model/lm_bf16.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/serve/kv_cache.hpp"
#include "runtime/serve/scheduler.hpp"
#include "runtime/serve/serving.hpp"
#include "runtime/text/text_stream.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf {

struct engine_core_options {
  sched_options sched;
  int num_blocks = 0;  // 0: max_seqs full contexts, capped at kv_budget_bytes
  std::size_t kv_budget_bytes = std::size_t{1} << 30;
  int threads = 1;  // for decode attention (paged_model)
  // `engine.dtype`: bf16 serves every projection and the head as bf16 (runtime/model/lm_bf16:
  // fp32 weights given are converted, the first ones and every update alike; weights quantized
  // to another scheme are refused). fp32: the weights as given.
  weight_dtype dtype = weight_dtype::fp32;
  kv_dtype kv = kv_dtype::fp32;  // `engine.kv_dtype` (auto: bf16 with dtype bf16)
  // `engine.device`: cuda serves from GPU memory (fp32 weights copied up, the KV pool and the
  // paged forward there; the sampled logits come back each step).
  device where = device::cpu;
};

// Cumulative histogram with fixed upper bounds (Prometheus style).
struct histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // counts[i]: observations <= bounds[i]; last: +Inf
  double sum = 0;
  uint64_t total = 0;
  explicit histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1) {}
  void observe(double v);
};

// Figures for /metrics. Written by the engine thread once per step under the mutex; read by
// any thread through text().
struct engine_stats {
  mutable std::mutex mu;
  int waiting = 0, running = 0, blocks_used = 0, blocks_total = 0;
  uint64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  uint64_t cache_queries = 0, cache_hits = 0;  // prefix cache, in prompt tokens
  uint64_t finished[5] = {};                   // by finish_reason
  double tokens_per_s = 0;                     // generated, over the last window
  // weight updates: the version served, and how many were swapped in
  uint64_t weights_version = 0, weight_updates = 0;
  histogram ttft{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60}};
  histogram tpot{{0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5}};
  histogram step_tokens{{1, 8, 32, 64, 128, 256, 512, 1024, 2048}};
  std::string text(const std::string& model) const;  // Prometheus exposition
  // A copy of the figures now (one lock), for sampling over time (serve_sample.hpp).
  serve::engine_snapshot snapshot() const;
};

class engine_core {
 public:
  using clock = std::chrono::steady_clock;
  // Serves w as version 0. The tokenizer and the configuration's special tokens (eos, bos) are
  // those of these first weights for the engine's life.
  engine_core(std::shared_ptr<const lm_weights> w, const tokenizer& tok,
              const engine_core_options& o);
  ~engine_core();

  // Checks a request against the model and the pool (prompt ids in the vocabulary, lengths
  // within the context, n within max_seqs, logprobs, penalties and logit_bias in their ranges):
  // status 200, or 400 with a message. Reads only
  // immutable state, so any thread may call it.
  serve::submit_result validate(const serve::completion_request& req) const;
  // validate()s and queues the request; the id is the caller's.
  serve::submit_result submit(uint64_t id, serve::completion_request req, serve::event_sink sink,
                              clock::time_point arrival);
  // Ends every unfinished choice of the request with finish_reason::cancelled; frees its blocks.
  void cancel(uint64_t id);
  // Ends every unfinished choice of every request (shutdown: cancelled; an engine failure:
  // error with the message).
  void end_all(serve::finish_reason f, const std::string& message = {});
  // One engine step; false when there was nothing to do. A step that did work is reported to the
  // step observer, if any.
  bool step();
  // Any thread: from the next step on (null: none).
  void observe_steps(serve::completion_backend::step_observer f);

  // Throws zf::error naming the first field (arch, vocab_size, hidden, n_layer, n_head,
  // n_kv_head, head_dim, intermediate, max_positions) where w's shape differs from the served
  // one, or incomplete weights. Reads only immutable state: any thread may call it.
  void check_weights(const lm_weights& w) const;
  // Between steps: serves w from the next step on as `version` (nullopt: the served one + 1;
  // else it must be newer), preempting every running sequence for recompute and flushing the
  // prefix cache (see the top of this file). Returns the new version. Throws zf::error, changing
  // nothing, for weights check_weights refuses or a version not newer than the served one.
  uint64_t update_weights(std::shared_ptr<const lm_weights> w, std::optional<uint64_t> version);
  // Any thread.
  uint64_t weights_version() const { return version_.load(); }
  bool idle() const { return sched_.idle(); }
  int waiting() const { return sched_.num_waiting(); }

  const engine_stats& stats() const { return stats_; }
  const block_pool& pool() const { return pool_; }
  const model_spec& config() const { return cfg_; }  // the served shape, fixed

 private:
  bool run_plan(step_plan plan);  // step() with work scheduled
  std::mutex observer_mu_;
  std::shared_ptr<const serve::completion_backend::step_observer> observer_;
  struct choice;
  struct request;
  // logprobs: parallel to tokens, or empty when the request did not ask for them.
  void emit(choice& c, std::string text, std::vector<int> tokens, serve::finish_reason f,
            std::vector<serve::position_logprobs> logprobs = {});
  void end_choice(choice& c, serve::finish_reason f, std::string text = {},
                  std::vector<int> tokens = {},
                  std::vector<serve::position_logprobs> logprobs = {});
  // logits: [vocab], the model's raw row token was sampled from (before penalties).
  void take_token(choice& c, int token, const float* logits, clock::time_point now);
  // token's log-probability under logits [vocab] and the top k alternatives.
  serve::position_logprobs logprobs_of(const float* logits, int token, int k);
  void publish_stats(int step_tokens);

  std::shared_ptr<const lm_weights> w_;  // the served weights; replaced by update_weights
  const model_spec cfg_;                 // the first weights' configuration (shape, eos)
  std::atomic<uint64_t> version_{0};     // of w_
  tokenizer tok_;
  engine_core_options o_;
  block_pool pool_;
  kv_storage kv_;
  scheduler sched_;
  std::unique_ptr<paged_model> runner_;  // reads w_ (paged_model keeps a reference: one per w_)
  uint64_t next_seq_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<request>> requests_;  // by request id
  std::unordered_map<uint64_t, choice*> seqs_;                       // by scheduler seq id
  std::vector<lm_chunk> chunks_;                                     // reused every step
  std::vector<int> top_ids_;  // logprobs_of's scratch: capacity serve::max_logprobs, kept
  // [vocab]: the penalized copy of a logits row for a choice with penalties or logit_bias;
  // allocated once here, written only when such a choice samples.
  std::vector<float> penalized_;
  engine_stats stats_;
  clock::time_point window_start_;
  uint64_t window_tokens_ = 0;
};

}  // namespace zf
