#include "runtime/train/local_ranks.hpp"

#include <exception>
#include <thread>

#include "runtime/core/error.hpp"

namespace zf {

local_rank_group::local_rank_group(std::vector<zero_rank*> ranks) : ranks_(std::move(ranks)) {
  if (ranks_.empty()) fail("local_rank_group: no ranks");
}

void on_thread_ranks(int n, const std::function<void(int)>& f) {
  if (n == 1) return f(0);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> th;
  for (int r = 1; r < n; ++r)
    th.emplace_back([&, r] {
      try {
        f(r);
      } catch (...) {
        errors[std::size_t(r)] = std::current_exception();
      }
    });
  try {
    f(0);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : th) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

moe::step_stats local_rank_group::moe_stats() {
  moe::step_stats all;
  for (zero_rank* r : ranks_) all.add(r->model().moe_step());
  return all;
}

void local_rank_group::zero_grad() {
  on_all([&](int r) { ranks_[r]->zero_grad(); });
}

std::vector<float> local_rank_group::forward_backward(const std::vector<batch_ptr>& batches,
                                                      float loss_scale) {
  std::vector<float> out(ranks_.size());
  on_all([&](int r) { out[r] = ranks_[r]->forward_backward(*batches[r], loss_scale); });
  return out;
}

std::vector<float> local_rank_group::evaluate(const std::vector<batch_ptr>& batches) {
  std::vector<float> out(ranks_.size());
  on_all([&](int r) {
    const token_batch& b = *batches[r];
    out[r] = ranks_[r]->forward(b.inputs.data(), b.targets.data(), b.b, b.t);
  });
  return out;
}

void local_rank_group::reduce_gradients() {
  on_all([&](int r) { ranks_[r]->reduce_gradients(); });
}

std::vector<double> local_rank_group::grad_sq_norms() {
  std::vector<double> out(ranks_.size());
  on_all([&](int r) { out[r] = ranks_[r]->grad_sq_norm(); });
  return out;
}

void local_rank_group::step(double lr, int step, float grad_scale) {
  on_all([&](int r) { ranks_[r]->step(lr, step, grad_scale); });
}

// Several local ranks are the whole communicator (one process): nothing to sum over. A single
// rank may be this process's member of a process group: reduce over it.
double local_rank_group::all_sum(double x) {
  return ranks_.size() == 1 ? ranks_[0]->all_sum(x) : x;
}

std::vector<zero_snapshot_ptr> local_rank_group::snapshot() {
  std::vector<zero_snapshot_ptr> out(ranks_.size());
  on_all([&](int r) { out[r] = std::make_shared<const zero_snapshot>(ranks_[r]->snapshot()); });
  return out;
}

}  // namespace zf
