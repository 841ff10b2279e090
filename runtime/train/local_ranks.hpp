#pragma once
// rank_group over zero_ranks of this process, each call run on one thread per rank (their
// collectives must meet; one rank runs inline). The train loop's plain driver: tests, benches
// and any embedding without actors. The ranks are not owned.
#include <functional>
#include <vector>

#include "runtime/train/train_loop.hpp"

namespace zf {

// f(r) for r in [0, n) at once, one thread each (rank 0 on the caller's thread); the first
// error is rethrown once all have returned. Ranks of one process meet in their collectives.
void on_thread_ranks(int n, const std::function<void(int)>& f);

class local_rank_group final : public rank_group {
 public:
  // ranks: every rank of their communicator, or the single rank this process holds in a
  // process group (then all_sum reduces over the processes).
  explicit local_rank_group(std::vector<zero_rank*> ranks);

  int size() const override { return static_cast<int>(ranks_.size()); }
  void zero_grad() override;
  std::vector<float> forward_backward(const std::vector<batch_ptr>& batches,
                                      float loss_scale) override;
  std::vector<float> evaluate(const std::vector<batch_ptr>& batches) override;
  void reduce_gradients() override;
  std::vector<double> grad_sq_norms() override;
  void step(double lr, int step, float grad_scale) override;
  double all_sum(double x) override;
  std::vector<zero_snapshot_ptr> snapshot() override;
  moe::step_stats moe_stats() override;

 private:
  template <class F>
  void on_all(F f) {  // f(local rank) on every rank at once; the first error is rethrown
    on_thread_ranks(size(), f);
  }
  std::vector<zero_rank*> ranks_;
};

}  // namespace zf
