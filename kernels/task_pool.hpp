#pragma once
// A fixed set of helper threads that take part in a caller's loop: run(n, fn) calls fn(worker, i)
// for every i in [0, n), spread over the caller and the helpers, and returns when all have
// returned. Built for many short jobs back to back (a decode step is ~50 GEMVs of 10-100 us):
//   - Pieces are claimed by whoever comes first; the caller claims too and then waits only for
//     pieces a helper has started. A helper the OS has not scheduled yet costs nothing (a pool
//     whose caller waits for every helper to wake, or an OpenMP barrier, waits a futex wake-up or
//     a time slice per call: measured ~50 us to ~9 ms per call on a loaded 2-core machine).
//   - After a job, helpers spin ~200 us (pausing, yielding the core now and then) for the next
//     one, then sleep on a condition variable until a job is published.
//   - worker in [0, size()) names the thread (the caller is 0), for per-thread scratch.
//   - The first exception thrown by fn is rethrown by run once every started piece has ended.
// One job at a time: run waits for another thread's job to end; try_run returns false instead.
// Not reentrant: fn must not run a job on the same pool (it would wait for itself).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace zf::kernels {

class task_pool {
 public:
  explicit task_pool(int threads);  // threads >= 1 (the caller counts as one; 1: all inline)
  ~task_pool();
  task_pool(const task_pool&) = delete;
  task_pool& operator=(const task_pool&) = delete;

  int size() const { return static_cast<int>(helpers_.size()) + 1; }
  using task = std::function<void(int worker, int i)>;
  void run(int n, const task& fn);
  // As run, or false at once (nothing called) while another thread's job holds the pool.
  bool try_run(int n, const task& fn);

 private:
  void run_locked(int n, const task& fn);
  void drain(int worker);
  void helper_loop(int worker);
  void publish();

  std::vector<std::thread> helpers_;
  std::mutex job_mu_;  // one job at a time
  std::uint64_t gen_ = 0;
  // generation << 40 | pieces << 20 | next piece: a claim is one compare-exchange, and a helper
  // holding a stale value (an earlier job's) fails it.
  std::atomic<std::uint64_t> state_{0};
  std::atomic<const task*> fn_{nullptr};
  std::atomic<int> in_flight_{0};         // helpers inside drain()
  std::atomic<std::uint32_t> signal_{0};  // bumped per job (and at stop)
  std::atomic<bool> stop_{false};
  // Sleep after the spin: a condition variable (std::atomic::wait of GCC 12's libstdc++ missed
  // wake-ups here). sleepers_ tells a publisher whether to take the lock and notify.
  std::atomic<int> sleepers_{0};
  std::mutex sleep_mu_;
  std::condition_variable wake_;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

}  // namespace zf::kernels
