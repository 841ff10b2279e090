#pragma once
// The RLHF losses the trainer differentiates: the clipped-ratio policy loss of PPO (InstructGPT /
// DeepSpeed-Chat), GRPO (DeepSeekMath), DAPO (asymmetric clip, token-mean), Dr. GRPO (constant
// length normaliser) and RLOO, with an optional KL-to-reference term, truncated importance
// weights for an off-policy rollout engine, and PPO's clipped value loss.
//
// The model's backward takes d loss / d logp per generated token (and the critic's d loss /
// d value), so every loss returns its value and that gradient; nothing here sees logits. A batch
// is S responses' tokens back to back: [N] arrays, N = sum of seq_len[S].
#include <span>
#include <string_view>
#include <vector>

namespace zf::rl {

// Schulman's estimators of KL(policy || ref) from one sampled token, r = ref_logp - logp:
//   k1 = -r (unbiased, can be negative), k2 = r^2 / 2, k3 = exp(r) - r - 1 (unbiased, >= 0;
//   GRPO's). No clamping: callers see a diverged policy as a large value, not a capped one.
enum class kl_kind { k1, k2, k3 };
// "k1", "k2" or "k3"; anything else is an error naming the allowed values.
kl_kind parse_kl_kind(std::string_view s);
std::string_view to_string(kl_kind k);

struct kl_term {
  double value;  // the estimate
  double dlogp;  // its derivative with respect to logp (ref_logp is fixed)
};
kl_term kl_estimate(kl_kind k, double logp, double ref_logp);

// How per-token losses become one number (loss = sum_i w_i loss_i over the N tokens):
//   seq_mean_token_mean     w = 1 / (S * len_s)       GRPO's original: each response weighs the
//                                                     same, so a long one's tokens weigh less
//   token_mean              w = 1 / N                 DAPO: every token weighs the same
//   seq_mean_token_sum_norm w = 1 / (S * norm_len)    Dr. GRPO: a constant, so no length bias
// S counts only the responses with at least one token: an empty one has no loss to average, and
// counting it would make the others' weight depend on how many empty rows the batch holds (as
// verl's agg_loss does; TRL's GRPO divides by all rows instead).
enum class loss_agg { seq_mean_token_mean, token_mean, seq_mean_token_sum_norm };
// The enumerator's name ("token_mean", ...); anything else is an error naming the allowed values.
loss_agg parse_loss_agg(std::string_view s);
std::string_view to_string(loss_agg a);

// seq_len [S] (each >= 0), out [N = sum seq_len]: the w_i above. norm_len > 0 is required for
// seq_mean_token_sum_norm (typically the max new tokens of a rollout) and ignored otherwise.
void aggregation_weights(std::span<const int> seq_len, loss_agg agg, double norm_len,
                         std::span<float> out);

// min(exp(old_logp - behav_logp), cap): the weight correcting for tokens sampled by the rollout
// engine (behav) rather than the trainer's own pre-update policy (old), truncated so one token
// whose probabilities disagree cannot dominate the batch. cap <= 0 turns it off (returns 1).
// A constant to the loss: no gradient flows through it.
double truncated_is_weight(double old_logp, double behav_logp, double cap);

struct policy_loss_input {
  std::span<const float> logp;        // [N] current policy, the variable being differentiated
  std::span<const float> old_logp;    // [N] proximal: the trainer's log-probs before this update
  std::span<const float> behav_logp;  // [N] the rollout engine's; empty = the same as old_logp
  std::span<const float> ref_logp;    // [N] reference policy; empty = no KL term
  std::span<const float> advantages;  // [N] per token (broadcast_to_tokens for GRPO / RLOO)
  std::span<const int> seq_len;       // [S] tokens of each response, summing to N
};

struct policy_loss_options {
  double clip_low = 0.2;   // ratio clipped below at 1 - clip_low, in [0, 1)
  double clip_high = 0.2;  // and above at 1 + clip_high (DAPO raises it, e.g. 0.28), >= 0
  double kl_coef = 0;      // KL-in-loss coefficient (GRPO's beta), >= 0; > 0 needs ref_logp
  kl_kind kl = kl_kind::k3;
  loss_agg agg = loss_agg::seq_mean_token_mean;
  double norm_len = 0;  // seq_mean_token_sum_norm's constant length
  double is_cap = 2;    // truncated importance-weight cap; <= 0 off
};

struct policy_loss_result {
  double loss = 0;            // pg_loss + kl_loss
  double pg_loss = 0;         // aggregated clipped-surrogate term
  double kl_loss = 0;         // aggregated kl_coef * estimator
  double kl_mean = 0;         // plain token mean of the estimator (no coef); 0 without ref_logp
  double clip_frac = 0;       // fraction of tokens taking the clipped branch (their pg grad is 0)
  double is_weight_mean = 0;  // token mean of the truncated importance weight
  double ratio_max = 0;       // largest exp(logp - old_logp)
  std::vector<float> dlogp;   // [N] d loss / d logp
};

// Per token i, with c_i from aggregation_weights:
//   ratio = exp(logp - old_logp), w = truncated_is_weight(old_logp, behav_logp, is_cap)
//   pg    = -w min(ratio A, clip(ratio, 1 - clip_low, 1 + clip_high) A)
//   dpg   = -w A ratio when the unclipped term is the min (taken on ties), else 0
//   kl    = kl_coef k(logp, ref_logp)
//   loss  = sum_i c_i (pg_i + kl_i), dlogp_i = c_i (dpg_i + kl_coef dk_i)
// Every statistic is over the N tokens (all 0 when N = 0). Errors name the array whose size does
// not match logp (or the seq_len sum) and any option out of range.
policy_loss_result policy_loss(const policy_loss_input& in, const policy_loss_options& o);
// The same into out, reusing out.dlogp's storage across steps.
void policy_loss(const policy_loss_input& in, const policy_loss_options& o,
                 policy_loss_result& out);

struct value_loss_result {
  double loss = 0;
  double clip_frac = 0;       // fraction of tokens where the clipped branch is the max
  std::vector<float> dvalue;  // [N] d loss / d value
};

// PPO's clipped critic loss as DeepSpeed-Chat computes it. values, old_values, returns: [N].
//   v_clip = old + clip(v - old, -clip, clip)
//   loss   = (1/N) sum 0.5 max((v - R)^2, (v_clip - R)^2)
// dvalue follows the larger branch (the unclipped one on ties): (v - R) / N, or 0 when the
// clipped branch wins, which only happens with v outside old +- clip where v_clip is constant.
// clip <= 0: the plain squared error.
value_loss_result value_loss(std::span<const float> values, std::span<const float> old_values,
                             std::span<const float> returns, double clip);
// The same into out, reusing out.dvalue's storage.
void value_loss(std::span<const float> values, std::span<const float> old_values,
                std::span<const float> returns, double clip, value_loss_result& out);

// ema <- decay ema + (1 - decay) params, elementwise ([P] each; decay in [0, 1]): the slowly
// moving copy of the policy some recipes use as the reference or for evaluation.
void ema_update(std::span<float> ema, std::span<const float> params, double decay);

}  // namespace zf::rl
