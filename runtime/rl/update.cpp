#include "runtime/rl/update.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>

#include "kernels/dispatch.hpp"
#include "runtime/core/clock.hpp"
#include "runtime/core/error.hpp"
#include "runtime/rl/advantage.hpp"
#include "runtime/rl/model_step.hpp"
#include "runtime/rl/policy_group.hpp"
#include "runtime/rl/rl_footprint.hpp"

namespace zf::rl {
namespace {

template <class T>
std::span<T> seg(std::vector<T>& v, std::size_t off, std::size_t n) {
  return std::span<T>(v).subspan(off, n);
}

}  // namespace

rl_updater::rl_updater(const rlhf_config& c, const optimizer_config& opt, rl_models m,
                       reward_fn reward, ptx_fn ptx)
    : c_(c), opt_(opt), m_(m), reward_(std::move(reward)), ptx_(std::move(ptx)) {
  if (m_.group) m_.policy = &m_.group->model(0);  // the policy the run reads
  if (!m_.policy || (!m_.policy_opt && !m_.group)) fail("rl: no policy to train");
  if (c_.algorithm != "grpo" && c_.algorithm != "rloo" && c_.algorithm != "ppo")
    fail("rlhf.algorithm: expected grpo, rloo or ppo, got '{}'", c_.algorithm);
  kl_coef_ = kl_coef_in_effect(c_);
  if (kl_coef_ > 0 && !m_.reference) fail("rlhf.kl_coef: {} needs a reference model", kl_coef_);
  if (c_.algorithm == "ppo" && (!m_.critic || !m_.critic_opt)) fail("rl: PPO needs a critic");
  if (c_.algorithm == "rloo" && c_.group_size < 2)
    fail("rlhf.group_size: RLOO needs >= 2 completions per prompt, got {}", c_.group_size);
  if (c_.algorithm == "grpo" && c_.group_size < 2)
    fail("rlhf.group_size: GRPO needs >= 2 completions per prompt, got {}", c_.group_size);
  lo_.clip_low = c_.clip_low;
  lo_.clip_high = c_.clip_high;
  lo_.kl_coef = c_.algorithm == "grpo" ? kl_coef_ : 0.0;  // RLOO, PPO fold it into the reward
  lo_.kl = parse_kl_kind(c_.kl_estimator);
  lo_.agg = parse_loss_agg(c_.loss_agg);
  lo_.norm_len = c_.max_new_tokens;
  lo_.is_cap = c_.is_cap;
}

void reference_logprobs(transformer& ref, std::span<const rollout_seq> seqs, int batch,
                        std::vector<float>& out, score_scratch& scratch) {
  const int S = static_cast<int>(seqs.size()), T = packed_length(seqs);
  packed_batch& p = scratch.packed;
  std::vector<float>& rows = scratch.rows;
  out.clear();
  for (int b0 = 0; b0 < S; b0 += batch) {
    const int b = std::min(batch, S - b0);
    pack(seqs.subspan(b0, b), T, p);
    rows.resize(std::size_t(b) * T);
    ref.score(p.ids.data(), p.targets.data(), b, T, rows.data());
    const std::size_t off = out.size();
    out.resize(off + p.tokens());
    gather_response(p, rows.data(), out.data() + off);
  }
}

// Reference log-probs and rewards (unless the rollout worker's scorer did them already) and the
// critic's values before the update.
void rl_updater::score(const rollout_batch& batch, update_stats& st) {
  const int S = static_cast<int>(batch.seqs.size()), T = packed_length(batch.seqs);
  const int mb = c_.micro_batch > 0 ? c_.micro_batch : S;
  const std::size_t N = behav_.size();
  if (batch.scored) {
    ref_ = batch.ref_logp;
    rewards_ = batch.rewards;
    if (rewards_.size() != std::size_t(S) || (m_.reference && ref_.size() != N))
      fail(
          "rl: batch {} came scored with {} rewards and {} reference log-probs for {} sequences "
          "of {} tokens",
          batch.step, rewards_.size(), ref_.size(), S, N);
  } else {
    if (m_.reference) reference_logprobs(*m_.reference, batch.seqs, mb, ref_, ref_scratch_);
    rewards_.assign(S, 0.0f);
    reward_(batch, rewards_);
  }
  old_values_.assign(m_.critic ? N : 0, 0.0f);
  std::size_t off = 0;
  for (int b0 = 0; m_.critic && b0 < S; b0 += mb) {
    const int b = std::min(mb, S - b0);
    pack(std::span(batch.seqs).subspan(b0, b), T, packed_);
    rows_.resize(std::size_t(b) * T);
    m_.critic->forward_rl(packed_.ids.data(), nullptr, b, T, nullptr, nullptr, rows_.data());
    gather_response(packed_, rows_.data(), old_values_.data() + off);
    off += packed_.tokens();
  }
  double sum = 0, sq = 0;
  for (float r : rewards_) sum += r;
  st.reward_mean = sum / S;
  for (float r : rewards_) sq += (r - st.reward_mean) * (r - st.reward_mean);
  st.reward_std = std::sqrt(sq / S);
  const int G = c_.group_size;
  if (G > 1) {
    int flat = 0;
    for (int g = 0; g < S / G; ++g) {
      const auto* r = rewards_.data() + std::size_t(g) * G;
      flat += std::all_of(r, r + G, [&](float x) { return x == r[0]; });
    }
    st.zero_spread_frac = double(flat) / (S / G);
  }
  if (m_.reference) {
    double kl = 0;
    for (std::size_t i = 0; i < N; ++i) kl += behav_[i] - ref_[i];
    st.kl = N ? kl / N : 0;
  }
}

void rl_updater::advantages(const rollout_batch& batch, update_stats&) {
  const int S = static_cast<int>(batch.seqs.size());
  const std::size_t N = behav_.size();
  adv_.assign(N, 0.0f);
  seq_adv_.assign(S, 0.0f);
  if (c_.algorithm == "grpo") {
    group_advantages(rewards_, c_.group_size, c_.scale_by_std, 1e-6, seq_adv_);
    broadcast_to_tokens(seq_adv_, seq_len_, adv_);
  } else if (c_.algorithm == "rloo") {
    std::vector<float> r = rewards_;
    std::size_t off = 0;
    for (int i = 0; i < S; ++i) {
      const std::size_t n = seq_len_[i];
      if (m_.reference) r[i] -= kl_coef_ * sequence_kl(seg(behav_, off, n), seg(ref_, off, n));
      off += n;
    }
    rloo_advantages(r, c_.group_size, seq_adv_);
    broadcast_to_tokens(seq_adv_, seq_len_, adv_);
  } else {  // ppo: KL-shaped per-token rewards, GAE over the critic's values
    returns_.assign(N, 0.0f);
    std::vector<float> tok_rewards;
    std::vector<float> no_ref;
    std::size_t off = 0;
    for (int i = 0; i < S; ++i) {
      const std::size_t n = seq_len_[i];
      tok_rewards.assign(n, 0.0f);
      auto ref = m_.reference ? seg(ref_, off, n) : seg(behav_, off, n);  // no reference: no KL
      shaped_rewards(seg(behav_, off, n), ref, rewards_[i], kl_coef_, c_.reward_clip, tok_rewards);
      gae(tok_rewards, seg(old_values_, off, n), c_.gamma, c_.lambda, seg(adv_, off, n),
          seg(returns_, off, n));
      off += n;
    }
  }
}

// One pass over the batch: forward in batch-invariant mode, the clipped objective, backward.
// One micro-batch of the policy pass (sequences [b0, b0 + b), their response tokens at off in the
// flat arrays) on `pol` with rank scratch `w`: forward in batch-invariant mode, the loss with the
// whole batch's aggregation weights, backward; its figures into mb.
void rl_updater::policy_micro(const rollout_batch& batch, int b0, int b, int T, std::size_t off,
                              int epoch, uint64_t version, transformer& pol, rank_scratch& w,
                              micro_stats& mb) {
  const int S = static_cast<int>(batch.seqs.size());
  const std::size_t N = behav_.size();
  pack(std::span(batch.seqs).subspan(b0, b), T, w.packed);
  const std::size_t n = w.packed.tokens(), rows = std::size_t(b) * T;
  w.rows.resize(rows);
  w.ent.resize(rows);
  // The whole batch's aggregation: this micro-batch's share of sequences (or tokens); an MoE
  // policy's balance and z-losses count with the same share.
  const double f = lo_.agg == loss_agg::token_mean ? double(n) / N : double(b) / S;
  {
    const kernels::batch_invariant_scope inv(true);  // the rollout engine's bits
    pol.forward_rl(w.packed.ids.data(), w.packed.targets.data(), b, T, w.rows.data(), w.ent.data(),
                   nullptr, float(f));
  }
  gather_response(w.packed, w.rows.data(), logp_.data() + off);
  if (epoch == 0) {
    std::copy_n(logp_.data() + off, n, old_.data() + off);
    std::size_t k = off;
    for (int i = 0; i < b; ++i) {
      const rollout_seq& q = batch.seqs[b0 + i];
      for (int j = 0; j < w.packed.len[i]; ++j, ++k) {
        if (q.version != version) continue;
        const double gap = std::fabs(double(logp_[k]) - behav_[k]);
        mb.gap_max = std::max(mb.gap_max, gap);
        mb.gap_sum += gap;
        ++mb.gap_tokens;
      }
    }
    for (std::size_t r = 0; r < rows; ++r) mb.ent_sum += w.ent[r];
  }
  policy_loss_input in;
  in.logp = seg(logp_, off, n);
  in.old_logp = seg(old_, off, n);
  in.behav_logp = seg(behav_, off, n);
  if (lo_.kl_coef > 0) in.ref_logp = seg(ref_, off, n);
  in.advantages = seg(adv_, off, n);
  in.seq_len = std::span<const int>(seq_len_).subspan(b0, b);
  policy_loss(in, lo_, w.pl);
  for (float& d : w.pl.dlogp) d = static_cast<float>(d * f);
  w.rows2.resize(rows);
  scatter_response(w.packed, w.pl.dlogp.data(), w.rows2.data());
  pol.backward_rl(w.packed.ids.data(), w.packed.targets.data(), w.rows2.data(), nullptr);
  mb.pg_loss = w.pl.pg_loss * f;
  mb.kl_loss = w.pl.kl_loss * f;
  mb.clip_frac = w.pl.clip_frac * n / N;
  mb.is_weight = w.pl.is_weight_mean * n / N;
  mb.ratio_max = w.pl.ratio_max;
}

// The policy's loss over the batch, its gradients in the policy's (or every rank's) grads:
// micro-batches of rlhf.micro_batch sequences, micro-batch i on rank i mod world; figures summed
// in micro-batch order, so they do not depend on the ranks.
void rl_updater::policy_pass(const rollout_batch& batch, int epoch, uint64_t version,
                             update_stats& st) {
  const int S = static_cast<int>(batch.seqs.size()), T = packed_length(batch.seqs);
  const int mb = c_.micro_batch > 0 ? c_.micro_batch : S;
  const std::size_t N = behav_.size();
  logp_.resize(N);
  if (epoch == 0) old_.resize(N);
  const int M = (S + mb - 1) / mb;
  mb_offsets_.assign(std::size_t(M) + 1, 0);
  for (int i = 0; i < M; ++i) {
    std::size_t n = 0;
    for (int q = i * mb; q < std::min(S, (i + 1) * mb); ++q) n += std::size_t(seq_len_[q]);
    mb_offsets_[std::size_t(i) + 1] = mb_offsets_[std::size_t(i)] + n;
  }
  mb_stats_.assign(std::size_t(M), micro_stats{});
  const int world = m_.group ? m_.group->world() : 1;
  scratch_.resize(std::size_t(world));
  auto run_rank = [&](int r) {
    transformer& pol = m_.group ? m_.group->model(r) : *m_.policy;
    for (int i = r; i < M; i += world)
      policy_micro(batch, i * mb, std::min(mb, S - i * mb), T, mb_offsets_[std::size_t(i)], epoch,
                   version, pol, scratch_[std::size_t(r)], mb_stats_[std::size_t(i)]);
  };
  if (m_.group)
    m_.group->on_all(run_rank);
  else
    run_rank(0);
  double gap_sum = 0, ent_sum = 0;
  for (const micro_stats& m : mb_stats_) {
    if (epoch != 0) break;
    st.pg_loss += m.pg_loss;
    st.kl_loss += m.kl_loss;
    st.clip_frac += m.clip_frac;
    st.is_weight_mean += m.is_weight;
    st.ratio_max = std::max(st.ratio_max, m.ratio_max);
    st.logprob_gap_max = std::max(st.logprob_gap_max, m.gap_max);
    st.gap_tokens += m.gap_tokens;
    gap_sum += m.gap_sum;
    ent_sum += m.ent_sum;
  }
  if (epoch == 0) {
    st.logprob_gap_mean = st.gap_tokens ? gap_sum / st.gap_tokens : 0;
    st.entropy = N ? ent_sum / N : 0;
  }
}

// The critic's clipped value loss over the batch and its AdamW step (PPO).
void rl_updater::critic_pass(const rollout_batch& batch, int epoch, update_stats& st) {
  const int S = static_cast<int>(batch.seqs.size()), T = packed_length(batch.seqs);
  const int mb = c_.micro_batch > 0 ? c_.micro_batch : S;
  const std::size_t N = behav_.size();
  transformer& critic = *m_.critic;
  critic.zero_grad();
  values_.resize(N);
  std::size_t off = 0;
  for (int b0 = 0; b0 < S; b0 += mb) {
    const int b = std::min(mb, S - b0);
    pack(std::span(batch.seqs).subspan(b0, b), T, packed_);
    const std::size_t n = packed_.tokens(), rows = std::size_t(b) * T;
    rows_.resize(rows);
    critic.forward_rl(packed_.ids.data(), nullptr, b, T, nullptr, nullptr, rows_.data());
    gather_response(packed_, rows_.data(), values_.data() + off);
    value_loss(seg(values_, off, n), seg(old_values_, off, n), seg(returns_, off, n), c_.value_clip,
               vl_);
    const double f = double(n) / N;  // the loss is a token mean over the whole batch
    for (float& d : vl_.dvalue) d = static_cast<float>(d * f);
    rows2_.resize(rows);
    scatter_response(packed_, vl_.dvalue.data(), rows2_.data());
    critic.backward_rl(packed_.ids.data(), nullptr, nullptr, rows2_.data());
    if (epoch == 0) {
      st.value_loss += vl_.loss * f;
      st.value_clip_frac += vl_.clip_frac * f;
    }
    off += n;
  }
  optimizer_step(critic, *m_.critic_opt, c_.critic_lr, ++critic_steps_, nullptr);
  (void)epoch;
}

void rl_updater::optimizer_step(transformer& m, adamw& opt, double lr, int step, double* norm) {
  const double n = clipped_step(m, opt, opt_.grad_clip, lr, step);
  if (norm) *norm = n;
}

update_stats rl_updater::update(const rollout_batch& batch, int step, uint64_t version) {
  update_stats st;
  const int S = static_cast<int>(batch.seqs.size());
  if (S == 0 || S % c_.group_size != 0)
    fail("rl: batch {} has {} sequences, not groups of {}", step, S, c_.group_size);
  seq_len_.resize(S);
  behav_.clear();
  int finished = 0;
  for (int i = 0; i < S; ++i) {
    const rollout_seq& s = batch.seqs[i];
    seq_len_[i] = static_cast<int>(s.response.size());
    behav_.insert(behav_.end(), s.logp.begin(), s.logp.end());
    finished += s.finished;
  }
  st.sequences = S;
  st.tokens = static_cast<int64_t>(behav_.size());
  st.response_len = double(st.tokens) / S;
  st.finished_frac = double(finished) / S;
  const auto t0 = clock_type::now();
  score(batch, st);
  advantages(batch, st);
  st.time_score_s = seconds_since(t0);
  const auto t1 = clock_type::now();
  for (int e = 0; e < c_.ppo_epochs; ++e) {
    if (m_.group)
      m_.group->zero_grad();
    else
      m_.policy->zero_grad();
    policy_pass(batch, e, version, st);
    if (ptx_ && c_.ptx_coef > 0) {
      std::vector<int> ids, targets;
      int b = 0, t = 0;
      ptx_(step, ids, targets, b, t);
      m_.policy->forward_backward(ids.data(), targets.data(), b, t,
                                  static_cast<float>(c_.ptx_coef));
    }
    const double warm = c_.warmup > 0 ? std::min(1.0, double(step + 1) / c_.warmup) : 1.0;
    if (m_.group) {
      const double norm = m_.group->step(opt_.grad_clip, c_.lr * warm, ++opt_steps_);
      if (e == 0) st.grad_norm = norm;
    } else {
      optimizer_step(*m_.policy, *m_.policy_opt, c_.lr * warm, ++opt_steps_,
                     e == 0 ? &st.grad_norm : nullptr);
    }
    if (m_.critic) critic_pass(batch, e, st);
  }
  st.time_train_s = seconds_since(t1);
  return st;
}

}  // namespace zf::rl
