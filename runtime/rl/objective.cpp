#include "runtime/rl/objective.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "runtime/core/error.hpp"

namespace zf::rl {

namespace {

void same_size(std::string_view fn, std::string_view name, std::size_t n, std::string_view ref,
               std::size_t want) {
  if (n != want) fail("{}: {} has {} values, {} has {}", fn, name, n, ref, want);
}

// What the aggregation weights depend on: the token count and the non-empty responses.
struct batch_shape {
  std::size_t tokens = 0;
  std::size_t nonempty = 0;
};

batch_shape shape_of(std::string_view fn, std::span<const int> seq_len) {
  batch_shape b;
  for (std::size_t s = 0; s < seq_len.size(); ++s) {
    if (seq_len[s] < 0) fail("{}: seq_len[{}] is {}, must be >= 0", fn, s, seq_len[s]);
    b.tokens += std::size_t(seq_len[s]);
    b.nonempty += seq_len[s] > 0;
  }
  return b;
}

void check_norm_len(std::string_view fn, loss_agg agg, double norm_len) {
  if (agg == loss_agg::seq_mean_token_sum_norm && !(norm_len > 0))
    fail("{}: seq_mean_token_sum_norm needs norm_len > 0 (the max new tokens), got {}", fn,
         norm_len);
}

// The weight of each token of a response of len >= 1 tokens (see loss_agg); in double so the
// policy loss needs no buffer of weights.
double token_weight(loss_agg agg, int len, const batch_shape& b, double norm_len) {
  switch (agg) {
    case loss_agg::seq_mean_token_mean:
      return 1.0 / (double(b.nonempty) * len);
    case loss_agg::token_mean:
      return 1.0 / double(b.tokens);
    case loss_agg::seq_mean_token_sum_norm:
      return 1.0 / (double(b.nonempty) * norm_len);
  }
  return 0;
}

// One token's clipped surrogate: its value, d/dlogp, and whether the clipped branch won.
struct surrogate {
  double pg, dpg, ratio;
  bool clipped;
};

surrogate clipped_surrogate(double logp, double old_logp, double adv, double w,
                            const policy_loss_options& o) {
  const double ratio = std::exp(logp - old_logp);
  const double unclipped = ratio * adv;
  const double clipped = std::clamp(ratio, 1 - o.clip_low, 1 + o.clip_high) * adv;
  // Inside the range the two are the same number, so the tie goes to the branch with a gradient.
  if (unclipped <= clipped) return {-w * unclipped, -w * adv * ratio, ratio, false};
  return {-w * clipped, 0.0, ratio, true};
}

void check_options(const policy_loss_options& o, bool has_ref) {
  if (!(o.clip_low >= 0 && o.clip_low < 1))
    fail("policy_loss: clip_low must be in [0, 1), got {}", o.clip_low);
  if (!(o.clip_high >= 0)) fail("policy_loss: clip_high must be >= 0, got {}", o.clip_high);
  if (!(o.kl_coef >= 0)) fail("policy_loss: kl_coef must be >= 0, got {}", o.kl_coef);
  // A configured KL penalty silently dropped would train an unregularised policy.
  if (o.kl_coef > 0 && !has_ref)
    fail("policy_loss: kl_coef is {} but ref_logp is empty (pass the reference log-probs)",
         o.kl_coef);
  check_norm_len("policy_loss", o.agg, o.norm_len);
}

}  // namespace

kl_kind parse_kl_kind(std::string_view s) {
  if (s == "k1") return kl_kind::k1;
  if (s == "k2") return kl_kind::k2;
  if (s == "k3") return kl_kind::k3;
  fail("unknown KL estimator '{}': expected k1, k2 or k3", s);
}

std::string_view to_string(kl_kind k) {
  switch (k) {
    case kl_kind::k1:
      return "k1";
    case kl_kind::k2:
      return "k2";
    case kl_kind::k3:
      return "k3";
  }
  return "?";
}

kl_term kl_estimate(kl_kind k, double logp, double ref_logp) {
  const double d = logp - ref_logp;  // log(pi / pi_ref) at the sampled token
  switch (k) {
    case kl_kind::k1:
      return {d, 1.0};
    case kl_kind::k2:
      return {0.5 * d * d, d};
    case kl_kind::k3: {
      // exp(-d) + d - 1; expm1 keeps digits when the policies agree (d near 0, the usual case).
      const double e = std::expm1(-d);
      return {e + d, -e};
    }
  }
  return {0, 0};
}

loss_agg parse_loss_agg(std::string_view s) {
  if (s == "seq_mean_token_mean") return loss_agg::seq_mean_token_mean;
  if (s == "token_mean") return loss_agg::token_mean;
  if (s == "seq_mean_token_sum_norm") return loss_agg::seq_mean_token_sum_norm;
  fail(
      "unknown loss aggregation '{}': expected seq_mean_token_mean, token_mean or "
      "seq_mean_token_sum_norm",
      s);
}

std::string_view to_string(loss_agg a) {
  switch (a) {
    case loss_agg::seq_mean_token_mean:
      return "seq_mean_token_mean";
    case loss_agg::token_mean:
      return "token_mean";
    case loss_agg::seq_mean_token_sum_norm:
      return "seq_mean_token_sum_norm";
  }
  return "?";
}

void aggregation_weights(std::span<const int> seq_len, loss_agg agg, double norm_len,
                         std::span<float> out) {
  // seq_len: [S]; out: [N = sum seq_len].
  const batch_shape b = shape_of("aggregation_weights", seq_len);
  if (out.size() != b.tokens)
    fail("aggregation_weights: out has {} values, the sum of seq_len is {}", out.size(), b.tokens);
  check_norm_len("aggregation_weights", agg, norm_len);
  std::size_t i = 0;
  for (int len : seq_len) {
    if (len == 0) continue;
    const float w = float(token_weight(agg, len, b, norm_len));
    std::fill_n(out.begin() + std::ptrdiff_t(i), len, w);
    i += std::size_t(len);
  }
}

double truncated_is_weight(double old_logp, double behav_logp, double cap) {
  if (cap <= 0) return 1.0;
  return std::min(std::exp(old_logp - behav_logp), cap);
}

void policy_loss(const policy_loss_input& in, const policy_loss_options& o,
                 policy_loss_result& out) {
  // logp, old_logp, advantages: [N]; behav_logp, ref_logp: [N] or empty; seq_len: [S].
  const std::size_t N = in.logp.size();
  same_size("policy_loss", "old_logp", in.old_logp.size(), "logp", N);
  same_size("policy_loss", "advantages", in.advantages.size(), "logp", N);
  const bool has_behav = !in.behav_logp.empty();
  const bool has_ref = !in.ref_logp.empty();
  if (has_behav) same_size("policy_loss", "behav_logp", in.behav_logp.size(), "logp", N);
  if (has_ref) same_size("policy_loss", "ref_logp", in.ref_logp.size(), "logp", N);
  const batch_shape b = shape_of("policy_loss", in.seq_len);
  if (b.tokens != N) fail("policy_loss: seq_len sums to {} tokens, logp has {}", b.tokens, N);
  check_options(o, has_ref);

  out.dlogp.resize(N);
  double pg_loss = 0, kl_loss = 0, kl_sum = 0, w_sum = 0, ratio_max = 0;
  std::size_t n_clipped = 0;
  std::size_t i = 0;
  for (int len : in.seq_len) {
    if (len == 0) continue;
    const double c = token_weight(o.agg, len, b, o.norm_len);
    for (int t = 0; t < len; ++t, ++i) {
      const double old_lp = in.old_logp[i];
      const double w = truncated_is_weight(old_lp, has_behav ? in.behav_logp[i] : old_lp, o.is_cap);
      const surrogate sg = clipped_surrogate(in.logp[i], old_lp, in.advantages[i], w, o);
      double grad = sg.dpg;
      pg_loss += c * sg.pg;
      if (has_ref) {
        const kl_term k = kl_estimate(o.kl, in.logp[i], in.ref_logp[i]);
        kl_sum += k.value;
        kl_loss += c * o.kl_coef * k.value;
        grad += o.kl_coef * k.dlogp;
      }
      out.dlogp[i] = float(c * grad);
      w_sum += w;
      n_clipped += sg.clipped;
      ratio_max = std::max(ratio_max, sg.ratio);
    }
  }
  const double n = N > 0 ? double(N) : 1.0;  // the statistics of an empty batch are 0
  out.pg_loss = pg_loss;
  out.kl_loss = kl_loss;
  out.loss = pg_loss + kl_loss;
  out.kl_mean = kl_sum / n;
  out.clip_frac = double(n_clipped) / n;
  out.is_weight_mean = w_sum / n;
  out.ratio_max = ratio_max;
}

policy_loss_result policy_loss(const policy_loss_input& in, const policy_loss_options& o) {
  policy_loss_result r;
  policy_loss(in, o, r);
  return r;
}

void value_loss(std::span<const float> values, std::span<const float> old_values,
                std::span<const float> returns, double clip, value_loss_result& out) {
  // values, old_values, returns: [N].
  const std::size_t N = values.size();
  same_size("value_loss", "old_values", old_values.size(), "values", N);
  same_size("value_loss", "returns", returns.size(), "values", N);
  out.dvalue.resize(N);
  const double inv_n = N > 0 ? 1.0 / double(N) : 0.0;
  double loss = 0;
  std::size_t n_clipped = 0;
  for (std::size_t i = 0; i < N; ++i) {
    const double v = values[i], old = old_values[i], R = returns[i];
    const double e = v - R;
    double l = 0.5 * e * e, d = e;
    // Inside old +- clip, v_clip is v itself: the branches tie and the unclipped one is taken,
    // without recomputing v_clip (old + (v - old) may round away from v).
    if (clip > 0 && std::abs(v - old) > clip) {
      const double ec = old + std::clamp(v - old, -clip, clip) - R;
      if (0.5 * ec * ec > l) {
        l = 0.5 * ec * ec;
        d = 0;  // v_clip does not move with v out here
        ++n_clipped;
      }
    }
    loss += l;
    out.dvalue[i] = float(d * inv_n);
  }
  out.loss = loss * inv_n;
  out.clip_frac = double(n_clipped) * inv_n;
}

value_loss_result value_loss(std::span<const float> values, std::span<const float> old_values,
                             std::span<const float> returns, double clip) {
  value_loss_result r;
  value_loss(values, old_values, returns, clip, r);
  return r;
}

void ema_update(std::span<float> ema, std::span<const float> params, double decay) {
  // ema, params: [P].
  same_size("ema_update", "params", params.size(), "ema", ema.size());
  if (!(decay >= 0 && decay <= 1)) fail("ema_update: decay must be in [0, 1], got {}", decay);
  for (std::size_t i = 0; i < ema.size(); ++i)
    ema[i] = float(decay * ema[i] + (1 - decay) * params[i]);
}

}  // namespace zf::rl
