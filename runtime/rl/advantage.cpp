#include "runtime/rl/advantage.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>

#include "runtime/core/error.hpp"

namespace zf::rl {

namespace {

// Every array of one call has the same length; the message names the one that differs.
void same_size(std::string_view fn, std::string_view name, std::size_t n, std::string_view ref,
               std::size_t want) {
  if (n != want) fail("{}: {} has {} values, {} has {}", fn, name, n, ref, want);
}

// rewards [B] split in groups of group_size; returns the group count.
std::size_t check_groups(std::string_view fn, std::size_t n, int group_size, std::size_t out) {
  if (group_size < 1) fail("{}: group_size must be >= 1, got {}", fn, group_size);
  if (n % std::size_t(group_size) != 0)
    fail("{}: rewards has {} values, not a multiple of group_size {}", fn, n, group_size);
  same_size(fn, "out", out, "rewards", n);
  return n / std::size_t(group_size);
}

}  // namespace

void gae(std::span<const float> rewards, std::span<const float> values, double gamma, double lambda,
         std::span<float> advantages, std::span<float> returns) {
  // rewards, values, advantages, returns: [T].
  const std::size_t T = rewards.size();
  same_size("gae", "values", values.size(), "rewards", T);
  same_size("gae", "advantages", advantages.size(), "rewards", T);
  same_size("gae", "returns", returns.size(), "rewards", T);
  // Backwards from the end: A_t needs A_{t+1}. V_{t+1} is carried in a local, not re-read, so
  // returns may alias values.
  double next_value = 0;  // V_T: the state after the last token is terminal
  double next_adv = 0;
  for (std::size_t i = T; i-- > 0;) {
    const double v = values[i];
    const double delta = double(rewards[i]) + gamma * next_value - v;
    next_adv = delta + gamma * lambda * next_adv;
    next_value = v;
    advantages[i] = float(next_adv);
    returns[i] = float(next_adv + v);
  }
}

void shaped_rewards(std::span<const float> logp, std::span<const float> ref_logp, double score,
                    double kl_beta, double reward_clip, std::span<float> out) {
  // logp, ref_logp, out: [T].
  const std::size_t T = logp.size();
  same_size("shaped_rewards", "ref_logp", ref_logp.size(), "logp", T);
  same_size("shaped_rewards", "out", out.size(), "logp", T);
  if (T == 0) fail("shaped_rewards: empty response, no token to carry the score {}", score);
  for (std::size_t t = 0; t < T; ++t) out[t] = float(-kl_beta * (double(logp[t]) - ref_logp[t]));
  const double s = reward_clip > 0 ? std::clamp(score, -reward_clip, reward_clip) : score;
  out[T - 1] = float(double(out[T - 1]) + s);
}

void group_advantages(std::span<const float> rewards, int group_size, bool scale_by_std, double eps,
                      std::span<float> out) {
  // rewards, out: [B], B = groups * group_size.
  const std::size_t groups =
      check_groups("group_advantages", rewards.size(), group_size, out.size());
  if (eps < 0) fail("group_advantages: eps must be >= 0, got {}", eps);
  const std::size_t G = std::size_t(group_size);
  for (std::size_t g = 0; g < groups; ++g) {
    const std::span<const float> r = rewards.subspan(g * G, G);
    double sum = 0;
    for (float x : r) sum += x;
    const double mean = sum / double(G);
    double scale = 1;
    if (scale_by_std && G > 1) {
      double ss = 0;
      for (float x : r) ss += (x - mean) * (x - mean);
      const double sd = std::sqrt(ss / double(G - 1));
      // All rewards equal: every r - mean is exactly 0, keep it 0 rather than 0 / 0 at eps = 0.
      scale = sd > 0 ? 1.0 / (sd + eps) : 1.0;
    }
    for (std::size_t i = 0; i < G; ++i) out[g * G + i] = float((r[i] - mean) * scale);
  }
}

void rloo_advantages(std::span<const float> rewards, int group_size, std::span<float> out) {
  // rewards, out: [B], B = groups * group_size.
  if (group_size < 2)
    fail(
        "rloo_advantages: group_size must be >= 2 (the baseline is the other samples' mean), "
        "got {}",
        group_size);
  const std::size_t groups =
      check_groups("rloo_advantages", rewards.size(), group_size, out.size());
  const std::size_t G = std::size_t(group_size);
  for (std::size_t g = 0; g < groups; ++g) {
    const std::span<const float> r = rewards.subspan(g * G, G);
    double sum = 0;
    for (float x : r) sum += x;
    for (std::size_t i = 0; i < G; ++i) out[g * G + i] = float(r[i] - (sum - r[i]) / double(G - 1));
  }
}

void whiten(std::span<float> x, bool shift_mean) {
  // x: [n], in place.
  if (x.empty()) return;
  const double n = double(x.size());
  double sum = 0;
  for (float v : x) sum += v;
  const double mean = sum / n;
  double ss = 0;
  for (float v : x) ss += (v - mean) * (v - mean);
  const double inv_std = 1.0 / std::sqrt(ss / n + 1e-8);
  const double add_back = shift_mean ? 0.0 : mean;
  for (float& v : x) v = float((v - mean) * inv_std + add_back);
}

double sequence_kl(std::span<const float> logp, std::span<const float> ref_logp) {
  // logp, ref_logp: [T].
  same_size("sequence_kl", "ref_logp", ref_logp.size(), "logp", logp.size());
  double kl = 0;
  for (std::size_t t = 0; t < logp.size(); ++t) kl += double(logp[t]) - ref_logp[t];
  return kl;
}

void broadcast_to_tokens(std::span<const float> per_seq, std::span<const int> seq_len,
                         std::span<float> out) {
  // per_seq, seq_len: [S]; out: [sum seq_len].
  same_size("broadcast_to_tokens", "seq_len", seq_len.size(), "per_seq", per_seq.size());
  std::size_t n = 0;
  for (std::size_t s = 0; s < seq_len.size(); ++s) {
    if (seq_len[s] < 0) fail("broadcast_to_tokens: seq_len[{}] is {}", s, seq_len[s]);
    n += std::size_t(seq_len[s]);
  }
  if (out.size() != n)
    fail("broadcast_to_tokens: out has {} values, the sum of seq_len is {}", out.size(), n);
  std::size_t at = 0;
  for (std::size_t s = 0; s < seq_len.size(); ++s) {
    std::fill_n(out.begin() + std::ptrdiff_t(at), seq_len[s], per_seq[s]);
    at += std::size_t(seq_len[s]);
  }
}

}  // namespace zf::rl
