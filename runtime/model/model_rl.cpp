// Score and RL modes of the one model (model.hpp): log-probabilities of given targets, and the
// forward / backward of policy-gradient and value losses. Rows are tokens: BT = b*t rows, V =
// vocab.
#include <cmath>

#include "kernels/softmax.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"

namespace zf {
namespace k = zf::kernels;

namespace {

// Sets a flag for the rest of a scope and clears it however the scope ends.
struct flag_scope {
  bool& flag;
  explicit flag_scope(bool& f) : flag(f) { flag = true; }
  ~flag_scope() { flag = false; }
};

}  // namespace

void transformer::score(const int* ids, const int* targets, int b, int t, float* logprobs) {
  cpu_only("score mode");
  if (!targets) fail("score needs targets");
  const int BT = b * t, V = spec_.vocab_size;
  for (int i = 0; i < BT; ++i)
    if (targets[i] >= V) fail("target id {} out of range 0..{}", targets[i], V - 1);
  {
    const flag_scope dropless(dropless_);  // the serving engine's routing (MoE: no capacity)
    run_forward(ids, nullptr, b, t, false, 1.0f);
  }
  // The serving engine's formula (engine_core::logprobs_of), so both give the same bits.
  for (int i = 0; i < BT; ++i) {
    const float* row = logits_ + std::size_t(i) * V;
    logprobs[i] =
        targets[i] >= 0 ? static_cast<float>(row[targets[i]] - k::log_sum_exp(row, V)) : 0.0f;
  }
}

void transformer::forward_rl(const int* ids, const int* targets, int b, int t, float* logprobs,
                             float* entropy, float* values, float aux_scale) {
  cpu_only("RL mode (forward_rl)");
  const int BT = b * t, V = spec_.vocab_size;
  const bool lm = logprobs || entropy;
  if (lm && !targets) fail("forward_rl: log-probs and entropies need targets");
  if (targets)
    for (int i = 0; i < BT; ++i)
      if (targets[i] >= V) fail("target id {} out of range 0..{}", targets[i], V - 1);
  values_out_ = values;
  aux_scale_ = aux_scale;                // 0: backward_rl differentiates no auxiliary loss
  const flag_scope dropless(dropless_);  // the rollout engine's routing: its log-probs
  try {
    run_forward(ids, nullptr, b, t, true, 1.0f, lm);  // keeps the head held for backward_rl
  } catch (...) {
    values_out_ = nullptr;
    throw;
  }
  values_out_ = nullptr;
  rl_lm_ = lm;
  if (!lm) return;
  lse_.resize(BT);  // kept for backward_rl (sized once per shape)
  for (int i = 0; i < BT; ++i) {
    const float* row = logits_ + std::size_t(i) * V;
    if (targets[i] < 0) {
      if (logprobs) logprobs[i] = 0.0f;
      if (entropy) entropy[i] = 0.0f;
      continue;
    }
    const double lse = k::log_sum_exp(row, V);
    lse_[i] = lse;
    // The serving engine's formula (engine_core::logprobs_of), so both give the same bits.
    if (logprobs) logprobs[i] = static_cast<float>(row[targets[i]] - lse);
    if (entropy) {  // H = lse - sum_v p_v x_v
      double px = 0;
      for (int v = 0; v < V; ++v) px += std::exp(row[v] - lse) * row[v];
      entropy[i] = static_cast<float>(lse - px);
    }
  }
}

void transformer::backward_rl(const int* ids, const int* targets, const float* dlogp,
                              const float* dvalue) {
  cpu_only("RL mode (backward_rl)");
  const kernels::precision_scope compute(precision_);
  const int BT = b_ * t_, V = spec_.vocab_size;
  if (dlogp && !rl_lm_) fail("backward_rl: the last forward_rl computed no log-probs");
  if (rl_lm_) {
    // d logp_i / d x_iv = [v == target_i] - p_iv; rows without a target get no gradient. Over
    // the logits in place (the fused cross-entropy's layout), which head_backward reads.
    for (int i = 0; i < BT; ++i) {
      float* row = logits_ + std::size_t(i) * V;
      const float g = dlogp && targets[i] >= 0 ? dlogp[i] : 0.0f;
      if (g == 0.0f) {
        std::fill(row, row + V, 0.0f);
        continue;
      }
      const double lse = lse_[i];  // forward_rl's, of these same logits
      for (int v = 0; v < V; ++v) row[v] = static_cast<float>(-g * std::exp(row[v] - lse));
      row[targets[i]] += g;
    }
  }
  backward_from_head(ids, dvalue, rl_lm_);
}

}  // namespace zf
