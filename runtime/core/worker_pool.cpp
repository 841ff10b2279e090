#include "runtime/core/worker_pool.hpp"

namespace zf {

worker_pool::worker_pool(int threads) {
  for (int w = 1; w < threads; ++w) helpers_.emplace_back([this, w] { helper_loop(w); });
}

worker_pool::~worker_pool() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : helpers_) t.join();
}

void worker_pool::work(int worker) {
  for (int i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) {
    try {
      (*fn_)(worker, i);
    } catch (...) {
      std::lock_guard lk(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void worker_pool::helper_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    work(worker);
    std::lock_guard lk(mu_);
    if (--busy_ == 0) done_.notify_one();
  }
}

void worker_pool::run(int n, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  if (helpers_.empty() || n == 1) {
    for (int i = 0; i < n; ++i) fn(0, i);
    return;
  }
  {
    std::lock_guard lk(mu_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    busy_ = static_cast<int>(helpers_.size());
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  work(0);
  std::unique_lock lk(mu_);
  done_.wait(lk, [&] { return busy_ == 0; });
  fn_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace zf
