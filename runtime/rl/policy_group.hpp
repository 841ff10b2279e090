#pragma once
// The policy trained data-parallel with ZeRO on N thread ranks of this process (train.ranks,
// zero.stage 0 or 1): each rank holds a replica of the parameters and runs its share of an
// update's micro-batches (micro-batch i on rank i mod N); gradients are all-reduced (stage 0) or
// reduce-scattered so that each rank steps AdamW on its 1/N of the moments (stage 1), then the
// updated slices are all-gathered. The global gradient norm is summed over the ranks' shares and
// clipped as the single-rank step does (optimizer.grad_clip). Rank 0's model is the policy the
// rest of the run reads (weights to publish, checkpoints).
// Stages 2 and 3 shard gradients and parameters through the training forward's hooks, which the
// RL mode's backward does not call: refused with a clear message.
#include <functional>
#include <memory>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/zero.hpp"

namespace zf::rl {

class policy_group {
 public:
  // Every rank starts from params ([layout total]).
  policy_group(const model_spec& spec, const optimizer_config& opt, int world, int stage,
               const float* params);
  ~policy_group();
  int world() const { return static_cast<int>(ranks_.size()); }
  int stage() const { return stage_; }
  transformer& model(int r) { return ranks_[std::size_t(r)]->model(); }
  zero_rank& rank(int r) { return *ranks_[std::size_t(r)]; }

  // f(r) on every rank at once, each on a thread of its own (rank 0 on the caller's); the first
  // error is rethrown once all have returned.
  void on_all(const std::function<void(int)>& f);
  void zero_grad();
  // After every rank's backward: reduce the gradients, clip by the global norm, AdamW at lr
  // (`step` 1-based), gather. Returns the norm before clipping.
  double step(double clip, double lr, int step);

  // The whole state as flat arrays of [layout total] (checkpoints): params from rank 0, the
  // moments from the ranks that own them; import_state gives every rank its part.
  void export_state(float* params, float* exp_avg, float* exp_avg_sq) const;
  void import_state(const float* params, const float* exp_avg, const float* exp_avg_sq);

 private:
  int stage_;
  std::vector<std::unique_ptr<comm::communicator>> comms_;
  std::vector<std::unique_ptr<zero_rank>> ranks_;
};

}  // namespace zf::rl
