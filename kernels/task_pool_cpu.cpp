// task_pool (see task_pool.hpp): claim-based helper threads that spin briefly between jobs.
#include <immintrin.h>

#include <chrono>
#include <stdexcept>

#include "kernels/task_pool.hpp"

namespace zf::kernels {

namespace {
constexpr std::uint64_t k_field = (1u << 20) - 1;  // pieces and next piece: 20 bits each
}

task_pool::task_pool(int threads) {
  for (int w = 1; w < threads; ++w) helpers_.emplace_back([this, w] { helper_loop(w); });
}

task_pool::~task_pool() {
  stop_.store(true);
  publish();
  for (auto& t : helpers_) t.join();
}

// A new job (or the stop) for the helpers: the counter first, then sleepers woken. Both sides
// are sequentially consistent (a store, then a load of the other side's variable), so either the
// publisher sees a sleeper and notifies under the lock, or the sleeper sees the new counter.
void task_pool::publish() {
  signal_.fetch_add(1);
  if (sleepers_.load() > 0) {
    std::lock_guard lk(sleep_mu_);
    wake_.notify_all();
  }
}

// Claims and runs pieces of the current job until none is left. fn_ is read only after a claim
// succeeded: the claim acquires the state that the job's release store published after fn_.
void task_pool::drain(int worker) {
  std::uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    const std::uint64_t next = s & k_field, pieces = (s >> 20) & k_field;
    if (next >= pieces) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      continue;
    try {
      (*fn_.load(std::memory_order_relaxed))(worker, static_cast<int>(next));
    } catch (...) {
      std::lock_guard lk(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
    s = state_.load(std::memory_order_acquire);
  }
}

void task_pool::helper_loop(int worker) {
  // 0, the counter's value when the pool was made: a helper that starts late still sees every
  // job and the stop published since (reading the counter here could skip the stop).
  std::uint32_t seen = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 1; signal_.load(std::memory_order_acquire) == seen; ++i) {
      if (i % 64 != 0) {
        _mm_pause();
      } else if (std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(200)) {
        std::unique_lock lk(sleep_mu_);
        sleepers_.fetch_add(1);
        wake_.wait(lk, [&] { return signal_.load() != seen; });
        sleepers_.fetch_sub(1);
      } else if (i % 1024 == 0) {
        std::this_thread::yield();  // a runnable thread on this core (2-core machines) goes first
      }
    }
    seen = signal_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    // Counted before claiming: a caller that finds every piece claimed then waits for this one.
    in_flight_.fetch_add(1, std::memory_order_acq_rel);
    drain(worker);
    in_flight_.fetch_sub(1, std::memory_order_release);
  }
}

void task_pool::run_locked(int n, const task& fn) {
  if (n > int(k_field)) throw std::invalid_argument("task_pool: more than 2^20 - 1 pieces");
  error_ = nullptr;
  fn_.store(&fn, std::memory_order_relaxed);
  gen_ = (gen_ + 1) & 0xFFFFFFu;
  state_.store(gen_ << 40 | std::uint64_t(n) << 20, std::memory_order_release);
  publish();
  drain(0);
  while (in_flight_.load(std::memory_order_acquire) != 0) _mm_pause();
  if (error_) std::rethrow_exception(error_);
}

void task_pool::run(int n, const task& fn) {
  if (n <= 0) return;
  if (helpers_.empty() || n == 1) {
    for (int i = 0; i < n; ++i) fn(0, i);
    return;
  }
  std::lock_guard lk(job_mu_);
  run_locked(n, fn);
}

bool task_pool::try_run(int n, const task& fn) {
  std::unique_lock lk(job_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return false;
  if (n <= 0) return true;
  if (helpers_.empty() || n == 1) {
    for (int i = 0; i < n; ++i) fn(0, i);
    return true;
  }
  run_locked(n, fn);
  return true;
}

}  // namespace zf::kernels
