#pragma once
// Rewards and advantages for RLHF: PPO's GAE over one response with DeepSpeed-Chat's per-token
// KL-shaped reward, GRPO's group-normalised advantages (DeepSeekMath), RLOO's leave-one-out
// baseline, TRL-style whitening and the sequence KL that RLOO folds into its reward.
//
// Everything works on one flat run of floats: a batch of S responses is its tokens back to back
// ([N] with N = sum of the lengths), a group of G samples of one prompt is G consecutive rewards.
// Sums are taken in double (a long response's discounted sum loses digits in float); outputs are
// float because they feed the model's float buffers. Output spans are the caller's, so one
// buffer can serve every step.
#include <span>

namespace zf::rl {

// Generalised advantage estimation over one response of T tokens.
//   rewards [T]: r_t, the reward after emitting token t (shaped_rewards gives DeepSpeed-Chat's).
//   values  [T]: V_t, the critic's value of the state before token t. The state after the last
//                token is terminal, so V_T = 0.
//   advantages, returns [T] (out): delta_t = r_t + gamma V_{t+1} - V_t,
//                A_t = delta_t + gamma lambda A_{t+1}, returns_t = A_t + V_t (the critic's target).
// advantages may be the rewards buffer and returns the values buffer (each input is read before
// its slot is written), so a caller can transform in place.
void gae(std::span<const float> rewards, std::span<const float> values, double gamma, double lambda,
         std::span<float> advantages, std::span<float> returns);

// DeepSpeed-Chat's per-token reward for one response of T >= 1 tokens:
//   out[t] = -kl_beta (logp[t] - ref_logp[t]), plus clip(score, -reward_clip, reward_clip) on the
//   last token (the reward model scores the whole response; it lands where the episode ends).
// reward_clip <= 0 adds the score unclipped. logp, ref_logp, out: [T]. T = 0 is an error: the
// score would have no token to land on.
void shaped_rewards(std::span<const float> logp, std::span<const float> ref_logp, double score,
                    double kl_beta, double reward_clip, std::span<float> out);

// GRPO's outcome advantage. rewards [B]: B / group_size consecutive groups, each the samples of
// one prompt. out[i] = r_i - mean(group), divided by (std(group) + eps) when scale_by_std, std
// being the unbiased sample std (torch.std's default, as TRL uses). A group whose rewards are
// all equal gets 0 (never NaN, even with eps = 0); group_size 1 gives 0 (nothing to compare
// against). Errors: group_size < 1, B not a multiple of group_size, eps < 0, out size != B.
void group_advantages(std::span<const float> rewards, int group_size, bool scale_by_std, double eps,
                      std::span<float> out);

// RLOO's leave-one-out baseline: out[i] = r_i - (sum(group) - r_i) / (G - 1) over consecutive
// groups of G = group_size rewards ([B]). G >= 2 (with one sample there is no other to form a
// baseline) and B a multiple of G, else an error.
void rloo_advantages(std::span<const float> rewards, int group_size, std::span<float> out);

// In place: x <- (x - mean) / sqrt(var + 1e-8), var the biased (1/n) variance over the span.
// shift_mean = false adds the mean back afterwards (TRL's masked_whiten: the scale is normalised
// but the sign of the average advantage is kept). An empty span is left alone. Note TRL and verl
// use the unbiased variance here; the two differ by sqrt(n / (n - 1)).
void whiten(std::span<float> x, bool shift_mean);

// sum_t (logp[t] - ref_logp[t]) over one response ([T] each): the k1 KL estimate of the whole
// sequence. RLOO subtracts beta times this from the sequence's reward.
double sequence_kl(std::span<const float> logp, std::span<const float> ref_logp);

// Per-sequence values to per-token ones: out[tokens of s] = per_seq[s]. per_seq [S],
// seq_len [S] (each >= 0), out [sum seq_len]. GRPO's and RLOO's advantages are one number per
// response; the policy loss takes one per token.
void broadcast_to_tokens(std::span<const float> per_seq, std::span<const int> seq_len,
                         std::span<float> out);

}  // namespace zf::rl
