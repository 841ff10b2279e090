// The MoE part of the train and score modes (model.hpp; the MoE MLP itself is runtime/model/moe,
// its step-wide routing runtime/model/moe_parallel): a block's MLP when it is an MoE layer, the
// routing figures, and the group a training step routes over.
#include <algorithm>

#include "runtime/core/error.hpp"
#include "runtime/core/seed.hpp"
#include "runtime/model/model.hpp"

namespace zf {

void transformer::mlp_part_forward(int l, const block::weights& w, int n, float* out) {
  layer_acts& a = la_[l];
  const int E = spec_.moe.experts_of(l);
  if (E == 0) {
    if (observer_) observer_->input(l, 2, a.ln2, n);
    block::mlp_forward(spec_, w, a.ln2, a.h, act_, a.res2, out, n, ops16(l));
    if (observer_) observer_->input(l, 3, act_, n);  // the activation the down projection read
    return;
  }
  if (spec_.moe.residual)  // PR-MoE: the dense MLP beside the experts
    block::mlp_forward(spec_, w, a.ln2, a.h, act_, a.res2, out, n, ops16(l));
  else if (out != a.res2)
    std::copy(a.res2, a.res2 + std::size_t(n) * spec_.hidden, out);
  a.moe.jitter = training_ ? spec_.moe.jitter : 0.0;
  a.moe.jitter_seed = splitmix64(route_seed_ + uint64_t(l));
  a.moe.jitter_row0 = 0;
  const double factor = training_   ? spec_.moe.capacity_factor
                        : dropless_ ? 0.0  // no capacity (moe::capacity)
                                    : spec_.moe.eval_capacity_factor;
  // Over a group, training and evaluation forwards route over every rank (the one-rank model's
  // numbers on the concatenated batch; every rank runs them in lockstep). score / forward_rl
  // route on their own rank's tokens, which needs every expert here (expert parallelism 1).
  if (grouped() && (training_ || !dropless_))
    return moe::forward_parallel(spec_, expert_spec_, w, a.ln2, n, factor, *moe_group_, a.moe,
                                 a.moe_par, moe_sc_, moe_psc_, out);
  if (grouped() && moe_group_->expert_parallel() > 1)
    fail(
        "score / log-probs of an MoE model over {} ranks with train.expert_parallel {}: each "
        "rank holds only its experts (expected train.expert_parallel 1 here)",
        moe_group_->world(), moe_group_->expert_parallel());
  moe::forward(spec_, expert_spec_, w, a.ln2, n, moe::capacity(spec_.moe, n, E, factor), a.moe,
               moe_sc_, out);
}

void transformer::mlp_part_backward(int l, const block::weights& w, const block::grads& g, int n,
                                    const float* d) {
  layer_acts& a = la_[l];
  if (spec_.dense_mlp(l))
    block::mlp_backward(spec_, w, g, a.ln2, a.h, act_, d, dbig_, dln_, n, ops16(l));
  else
    std::fill(dln_, dln_ + std::size_t(n) * spec_.hidden, 0.0f);
  if (!spec_.moe.experts_of(l)) return;
  if (a.moe.parallel)
    moe::backward_parallel(spec_, expert_spec_, w, g, a.ln2, a.moe, a.moe_par, moe_sc_, moe_psc_,
                           *moe_group_, d, aux_scale_, dln_);
  else
    moe::backward(spec_, expert_spec_, w, g, a.ln2, a.moe, moe_sc_, d, aux_scale_, dln_);
}

void transformer::set_moe_group(moe::group* g) {
  if (g && g->world() > 1) {
    const int ep = g->expert_parallel();
    if (ep < 1 || g->world() % ep)
      fail("train.expert_parallel: expected a divisor of the {} ranks, got {}", g->world(), ep);
    for (int l = 0; l < L_; ++l)
      if (const int E = spec_.moe.experts_of(l); E % ep)
        fail(
            "train.expert_parallel: expected a divisor of every MoE layer's experts (layer {} "
            "has {}), got {}",
            l, E, ep);
  }
  moe_group_ = g;
  acts_ = arena{};  // re-planned with (or without) the exchange buffers
  b_ = t_ = 0;
}

std::vector<transformer::moe_layer_stats> transformer::moe_stats() const {
  std::vector<moe_layer_stats> out;
  if (!acts_.ready()) return out;
  for (int l = 0; l < L_; ++l) {
    const int E = spec_.moe.experts_of(l);
    if (!E) continue;
    const moe::layer_state& st = la_[std::size_t(l)].moe;
    out.push_back({l, st.n, st.dropped, std::vector<int>(st.counts, st.counts + E), st.balance,
                   st.z_loss, st.entropy});
  }
  return out;
}

double transformer::moe_balance_loss() const {
  double sum = 0;
  if (acts_.ready())
    for (int l = 0; l < L_; ++l)
      if (spec_.moe.experts_of(l)) sum += la_[std::size_t(l)].moe.balance;
  return sum;
}

double transformer::moe_z_loss() const {
  double sum = 0;
  if (acts_.ready())
    for (int l = 0; l < L_; ++l)
      if (spec_.moe.experts_of(l)) sum += la_[std::size_t(l)].moe.z_loss;
  return sum;
}

}  // namespace zf
