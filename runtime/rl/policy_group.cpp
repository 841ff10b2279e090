#include "runtime/rl/policy_group.hpp"

#include <cmath>

#include "runtime/core/error.hpp"
#include "runtime/train/local_ranks.hpp"
#include "runtime/train/optim.hpp"

namespace zf::rl {

policy_group::policy_group(const model_spec& spec, const optimizer_config& opt, int world,
                           int stage, const float* params)
    : stage_(stage) {
  if (world < 1) fail("train.ranks: expected at least 1, got {}", world);
  if (stage != 0 && stage != 1)
    fail(
        "zero.stage = {}: an RL policy trains with ZeRO stage 0 or 1 (stages 2 and 3 shard "
        "through the training forward's hooks, which the RL backward does not call)",
        stage);
  comms_ = comm::make_local_group(world);
  for (int r = 0; r < world; ++r)
    ranks_.push_back(std::make_unique<zero_rank>(spec, opt, stage, *comms_[std::size_t(r)]));
  import_state(params, nullptr, nullptr);
}

policy_group::~policy_group() = default;

void policy_group::on_all(const std::function<void(int)>& f) {
  on_thread_ranks(world(), f);
}

void policy_group::zero_grad() {
  for (auto& r : ranks_) r->zero_grad();
}

double policy_group::step(double clip, double lr, int step) {
  std::vector<double> norms(ranks_.size());
  on_all([&](int r) {
    zero_rank& z = *ranks_[std::size_t(r)];
    z.reduce_gradients();
    const double norm = std::sqrt(z.all_sum(z.grad_sq_norm()));
    z.step(lr, step, clip_coefficient(norm, clip));
    norms[std::size_t(r)] = norm;
  });
  return norms[0];
}

void policy_group::export_state(float* params, float* exp_avg, float* exp_avg_sq) const {
  for (const auto& r : ranks_) r->export_state(params, exp_avg, exp_avg_sq);
}

void policy_group::import_state(const float* params, const float* exp_avg,
                                const float* exp_avg_sq) {
  for (auto& r : ranks_) r->import_state(params, exp_avg, exp_avg_sq);
}

}  // namespace zf::rl
