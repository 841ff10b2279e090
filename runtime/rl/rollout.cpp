#include "runtime/rl/rollout.hpp"

#include <chrono>
#include <string>

#include "runtime/core/clock.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/seed.hpp"

namespace zf::rl {
uint64_t seed_of(uint64_t seed, int step, int prompt) {
  return splitmix64(splitmix64(seed ^ (uint64_t(uint32_t(step)) << 32)) +
                    uint64_t(uint32_t(prompt)));
}

std::vector<rollout_seq> generate(serve::completion_backend& engine,
                                  const std::vector<std::vector<int>>& prompts,
                                  const rollout_options& o, int step) {
  const int G = o.group_size, P = static_cast<int>(prompts.size());
  std::vector<rollout_seq> out(std::size_t(P) * G);
  std::mutex mu;
  std::condition_variable cv;
  int open = P * G;
  std::string error;
  for (int i = 0; i < P; ++i) {
    serve::completion_request req;
    req.prompt = prompts[i];
    req.max_tokens = o.max_new_tokens;
    req.n = G;
    req.sampling.temperature = static_cast<float>(o.temperature);
    req.sampling.seed = seed_of(o.seed, step, i);
    req.sampling.logprobs = 0;
    for (int c = 0; c < G; ++c) {
      out[std::size_t(i) * G + c].prompt_index = i;
      out[std::size_t(i) * G + c].prompt = prompts[i];
    }
    // Called on the engine's thread: appends and returns.
    auto sink = [&, i](const serve::completion_event& e) {
      std::lock_guard lk(mu);
      rollout_seq& s = out[std::size_t(i) * G + e.index];
      s.response.insert(s.response.end(), e.tokens.begin(), e.tokens.end());
      for (auto& lp : e.logprobs) s.logp.push_back(lp.chosen.logprob);
      s.text += e.text;
      if (!e.tokens.empty()) s.version = e.weights_version;
      if (e.finish == serve::finish_reason::none) return;
      s.finished = e.finish == serve::finish_reason::stop;
      if (e.finish == serve::finish_reason::error || e.finish == serve::finish_reason::cancelled)
        error = e.error.empty() ? "the engine cancelled a rollout" : e.error;
      if (--open == 0) cv.notify_all();
    };
    const serve::submit_result r = engine.submit(std::move(req), sink);
    if (r.status != 200) {
      // Requests already accepted still call the sink: wait for them before failing.
      std::unique_lock lk(mu);
      open -= (P - i) * G;
      cv.wait(lk, [&] { return open == 0; });
      fail("rollout: the engine refused prompt {} of step {} ({}: {})", i, step, r.status,
           r.message);
    }
  }
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return open == 0; });
  if (!error.empty()) fail("rollout: step {}: {}", step, error);
  for (auto& s : out)
    if (s.logp.size() != s.response.size())
      fail("rollout: the engine gave {} log-probs for {} tokens", s.logp.size(), s.response.size());
  return out;
}

rollout_worker::rollout_worker(serve::completion_backend& engine, prompts_fn prompts,
                               rollout_options o, int steps, int overlap, scorer_fn scorer,
                               int first_step, restart_fn restart)
    : engine_(&engine),
      prompts_(std::move(prompts)),
      scorer_(std::move(scorer)),
      restart_(std::move(restart)),
      o_(o),
      steps_(steps),
      overlap_(overlap),
      first_(first_step) {}

rollout_worker::~rollout_worker() {
  stop();
}

void rollout_worker::start() {
  th_ = std::thread([this] { run(); });
}

void rollout_worker::request_stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void rollout_worker::stop() {
  request_stop();
  if (th_.joinable()) th_.join();
}

void rollout_worker::publish(uint64_t version, std::shared_ptr<const lm_weights> w) {
  {
    std::lock_guard lk(mu_);
    published_[version] = std::move(w);
  }
  cv_.notify_all();
}

std::shared_ptr<const lm_weights> rollout_worker::wait_version(uint64_t v, double& waited) {
  const auto t0 = clock_type::now();
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return stopping_ || published_.count(v); });
  waited = seconds_since(t0);
  if (stopping_) return nullptr;
  auto w = published_[v];
  published_.erase(published_.begin(), published_.upper_bound(v));  // older ones are done with
  return w;
}

void rollout_worker::run() {
  try {
    for (int s = first_; s < steps_; ++s) {
      rollout_batch b;
      b.step = s;
      b.version = static_cast<uint64_t>(std::max(0, s - overlap_));
      if (b.version > engine_->weights_version()) {
        auto w = wait_version(b.version, b.wait_s);
        if (!w) return;
        served_ = std::move(w);  // what a restarted engine serves, should this swap fail
        const auto t0 = clock_type::now();
        with_restarts(b.version, [&] {  // a restarted engine serves b.version already
          if (b.version > engine_->weights_version()) engine_->update_weights(b.version, served_);
        });
        b.sync_s = seconds_since(t0);
        if (span_) span_("sync", t0, clock_type::now());
      }
      {
        std::lock_guard lk(mu_);
        if (stopping_) return;
      }
      const auto t0 = clock_type::now();
      with_restarts(b.version, [&] { b.seqs = generate(*engine_, prompts_(s), o_, s); });
      b.gen_s = seconds_since(t0);
      if (span_) span_("generate", t0, clock_type::now());
      for (auto& q : b.seqs)
        if (q.version != b.version)
          fail("rollout: step {} expected weights version {}, a sequence came from {}", s,
               b.version, q.version);
      if (scorer_) {
        const auto t1 = clock_type::now();
        scorer_(b);
        b.score_s = seconds_since(t1);
        b.scored = true;
      }
      std::lock_guard lk(mu_);
      ready_.push_back(std::move(b));
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard lk(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

void rollout_worker::with_restarts(uint64_t version, const std::function<void()>& f) {
  for (;;) {
    try {
      return f();
    } catch (const std::exception&) {
      if (!restart_) throw;
      // A broken connection may be seen before the engine knows it is gone: ask for a moment.
      std::string why = engine_->failure();
      for (int i = 0; why.empty() && i < 50; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        why = engine_->failure();
      }
      if (why.empty()) throw;
      serve::completion_backend* fresh = restart_(version, served_, why);
      if (!fresh) throw;
      engine_ = fresh;  // it serves `version` already; f again: the same seeds, the same bits
    }
  }
}

rollout_batch rollout_worker::take(int step) {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return !ready_.empty() || error_ || stopping_; });
  if (ready_.empty()) {
    if (error_) std::rethrow_exception(error_);
    fail("rollout: the worker stopped before step {}", step);
  }
  rollout_batch b = std::move(ready_.front());
  ready_.pop_front();
  if (b.step != step) fail("rollout: expected batch {}, got {}", step, b.step);
  return b;
}

}  // namespace zf::rl
