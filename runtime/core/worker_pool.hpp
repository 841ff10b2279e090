#pragma once
// A fixed set of helper threads for loops the kernels do not parallelise themselves (attention
// of many decode rows, each over its own sequence's paged KV). The caller takes part, so a pool
// of size 1 runs everything inline. Threads are started once and sleep between jobs.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace zf {

class worker_pool {
 public:
  explicit worker_pool(int threads);  // threads >= 1 (the caller counts as one)
  ~worker_pool();
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  int size() const { return static_cast<int>(helpers_.size()) + 1; }
  // Calls fn(worker, i) for every i in [0, n), spread over the threads (worker in [0, size())
  // names the thread, for per-thread scratch); returns when all calls have returned. The first
  // exception thrown by fn is rethrown here. Not reentrant.
  void run(int n, const std::function<void(int, int)>& fn);

 private:
  void work(int worker);
  void helper_loop(int worker);

  std::vector<std::thread> helpers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  std::atomic<int> next_{0};
  int busy_ = 0;  // helpers still in the current job
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace zf
