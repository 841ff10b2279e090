#pragma once
// Rollout generation on the serving engine (serve::completion_backend: the engine actor in this
// process, or a client of one elsewhere), and the worker thread that runs it ahead of training
// with bounded staleness:
//   batch s is generated with exactly weights version max(0, s - overlap) and no other, so a run
//   is the same bit for bit whatever the timing; overlap 0 alternates with training, overlap k
//   lets batch n + k generate while the policy trains on batch n.
// Weights are swapped into the engine only between batches (the engine is idle then), so a
// rollout always finishes on the version it started with. Every queue is bounded: the worker
// cannot run past version s - overlap, so at most overlap + 1 batches wait for the trainer.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/rl/experience.hpp"
#include "runtime/serve/serving.hpp"

namespace zf::rl {

struct rollout_options {
  int group_size = 8;  // completions per prompt (the request's n)
  int max_new_tokens = 8;
  double temperature = 1.0;  // 0: greedy (evaluation)
  uint64_t seed = 0;         // choice c of prompt i of step s samples with seed_of(seed, s, i) + c
};

uint64_t seed_of(uint64_t seed, int step, int prompt);
// A run's rollout settings (rlhf.group_size, max_new_tokens, temperature) with its seed.
rollout_options rollout_options_of(const rlhf_config& c, uint64_t seed);

// Generates group_size completions of every prompt (prompt-major order) and waits for them.
// Log-probs are the engine's (before temperature: log_softmax of the raw logits). Throws
// zf::error when the engine refuses a request or ends one with an error.
std::vector<rollout_seq> generate(serve::completion_backend& engine,
                                  const std::vector<std::vector<int>>& prompts,
                                  const rollout_options& o, int step);

class rollout_worker {
 public:
  using prompts_fn = std::function<std::vector<std::vector<int>>(int step)>;
  using scorer_fn = std::function<void(rollout_batch&)>;
  // A new engine in place of one that is gone (engine.failure(), `why`), serving the weights of
  // `version` (null: the first engine's version-0 weights) labelled `version`; null to give up.
  // Told of each weights swap ("sync") and generation ("generate"), on the worker's thread (a
  // run's timeline: monitor/span_log).
  using span_fn = std::function<void(const char* what, std::chrono::steady_clock::time_point t0,
                                     std::chrono::steady_clock::time_point t1)>;
  using restart_fn = std::function<serve::completion_backend*(
      uint64_t version, std::shared_ptr<const lm_weights> weights, const std::string& why)>;
  // engine serves weights version 0 already; prompts(s) gives batch s's prompts; scorer (may be
  // null) scores each batch after generation with the frozen roles (reference, reward): both
  // called on the worker's thread, so with overlap that work runs beside the trainer's.
  // restart (may be null): called when a batch fails because the engine is gone; the batch is
  // then generated again on the new engine, the same bits (its seeds and version are the same).
  rollout_worker(serve::completion_backend& engine, prompts_fn prompts, rollout_options o,
                 int steps, int overlap, scorer_fn scorer = nullptr, int first_step = 0,
                 restart_fn restart = nullptr);
  ~rollout_worker();
  void start();
  // The trainer, after update v: the weights of version v (kept until the worker used them).
  void publish(uint64_t version, std::shared_ptr<const lm_weights> w);
  // Blocks until batch `step` is ready (steps are taken in order); rethrows the worker's error.
  rollout_batch take(int step);
  void stop();  // the worker ends after the batch in flight; take() then throws
  // stop() without waiting for the worker: wakes take() and returns (any thread).
  void request_stop();
  void on_span(span_fn f) { span_ = std::move(f); }  // before start()

 private:
  void run();
  std::shared_ptr<const lm_weights> wait_version(uint64_t v, double& waited);

  // f (a swap, a generation) again on a new engine while the engine is gone and restart_ gives
  // one; rethrows otherwise.
  void with_restarts(uint64_t version, const std::function<void()>& f);

  serve::completion_backend* engine_;
  prompts_fn prompts_;
  scorer_fn scorer_;
  restart_fn restart_;
  span_fn span_;
  std::shared_ptr<const lm_weights> served_;  // the weights swapped in last (null: the first)
  rollout_options o_;
  int steps_, overlap_, first_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::shared_ptr<const lm_weights>> published_;
  std::deque<rollout_batch> ready_;
  std::exception_ptr error_;
  bool stopping_ = false;
  std::thread th_;
};

}  // namespace zf::rl
