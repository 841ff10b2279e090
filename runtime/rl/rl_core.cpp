#include "runtime/rl/rl_core.hpp"

#include <chrono>
#include <cmath>

#include "runtime/core/clock.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/rl/rollout.hpp"

namespace zf::rl {
namespace {

std::shared_ptr<const lm_weights> weights_of(transformer& m) {
  return std::make_shared<const lm_weights>(copy_lm_weights(m.spec(), m.params().data()));
}

}  // namespace

rollout_options rollout_options_of(const rlhf_config& c, uint64_t seed) {
  rollout_options r;
  r.group_size = c.group_size;
  r.max_new_tokens = c.max_new_tokens;
  r.temperature = c.temperature;
  r.seed = seed;
  return r;
}

rl_core::rl_core(rl_core_options o, rl_models m, const prompt_source& prompts,
                 reward_fn extra_reward, ptx_fn ptx)
    : o_(std::move(o)),
      m_(m),
      prompts_(prompts),
      extra_(std::move(extra_reward)),
      updater_(
          o_.rl, o_.opt, m,
          [this](const rollout_batch& b, std::vector<float>& out) { rewards(b, out); },
          std::move(ptx)) {
  if (!prompts_.has_rule() && !extra_)
    fail("rl: no reward: the prompts have no answers and there is no reward model");
  if (o_.rl.ema > 0) {
    const fbuffer& p = m_.policy->params();
    ema_.assign(p.data(), p.data() + p.size());
  }
  next_ = o_.start_step;
  recent_ = o_.start_versions;
  recent_[o_.start_step] = weights_of(*m_.policy);  // version start_step: the policy as it is
  if (o_.start_step > 0)
    updater_.set_optimizer_steps(o_.start_optimizer_steps.first, o_.start_optimizer_steps.second);
  last_ = clock_type::now();
}

std::vector<std::vector<int>> rl_core::prompt_ids(int step) const {
  std::vector<std::vector<int>> ids;
  for (auto& p : prompts_.step(step)) ids.push_back(std::move(p.ids));
  return ids;
}

std::map<uint64_t, std::shared_ptr<const lm_weights>> rl_core::initial_versions() const {
  std::map<uint64_t, std::shared_ptr<const lm_weights>> v;
  for (auto& [k, w] : recent_)
    if (k > 0) v[k] = w;  // the engine starts on version 0
  return v;
}

std::pair<double, double> rl_core::evaluate(serve::completion_backend& engine) const {
  const auto& ev = prompts_.eval();
  if (ev.empty()) return {0, 0};
  std::vector<std::vector<int>> ids;
  for (auto& p : ev) ids.push_back(p.ids);
  rollout_options g = rollout_options_of(o_.rl, o_.seed);
  g.group_size = 1;
  g.temperature = 0;
  const auto seqs = generate(engine, ids, g, -1);
  double sum = 0, solved = 0;
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const double r = prompts_.rule_reward(ev[i], seqs[i].text);
    sum += r;
    solved += r == 1.0;
  }
  return {sum / seqs.size(), solved / seqs.size()};
}

double rl_core::rewards(const rollout_batch& b, std::vector<float>& out) const {
  const std::vector<prompt_item> items = prompts_.step(b.step);  // a pure function of the step
  // The rule reward is computed whenever there is one: weighted into the reward, and reported
  // as the true reward (a learned reward model alone is judged by it).
  double rule_sum = 0;
  for (std::size_t i = 0; i < b.seqs.size(); ++i) {
    const rollout_seq& s = b.seqs[i];
    const double rule =
        prompts_.has_rule() ? prompts_.rule_reward(items.at(s.prompt_index), s.text) : 0.0;
    rule_sum += rule;
    out[i] = static_cast<float>(o_.rl.rule_reward * rule);
  }
  const double rule_mean = prompts_.has_rule() ? rule_sum / b.seqs.size() : -1;
  if (extra_) {
    std::vector<float> more(out.size(), 0.0f);
    extra_(b, more);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] += more[i];
  }
  return rule_mean;
}

// Reference log-probs and rewards need only frozen models, so they are done as soon as a batch
// is generated, beside the trainer (with overlap) instead of on its critical path.
void rl_core::score(rollout_batch& b) const {
  const auto t0 = clock_type::now();
  const int S = static_cast<int>(b.seqs.size());
  if (m_.reference)
    reference_logprobs(*m_.reference, b.seqs, o_.rl.micro_batch > 0 ? o_.rl.micro_batch : S,
                       b.ref_logp, score_scratch_);
  b.rewards.assign(S, 0.0f);
  b.true_reward_mean = rewards(b, b.rewards);
  b.score_s = seconds_since(t0);
  b.scored = true;
}

nlohmann::json rl_core::step_json(int s, const rollout_batch& b, const update_stats& st,
                                  double wall, double wait, double publish_s) const {
  nlohmann::json j;
  j["step"] = s + 1;
  j["rollout_version"] = b.version;
  j["version_lag"] = static_cast<int64_t>(s) - static_cast<int64_t>(b.version);
  j["reward_mean"] = st.reward_mean;
  j["reward_std"] = st.reward_std;
  if (b.true_reward_mean >= 0) j["true_reward_mean"] = b.true_reward_mean;
  j["zero_spread_frac"] = st.zero_spread_frac;
  j["kl"] = st.kl;
  j["entropy"] = st.entropy;
  j["clip_frac"] = st.clip_frac;
  j["is_weight_mean"] = st.is_weight_mean;
  j["ratio_max"] = st.ratio_max;
  j["pg_loss"] = st.pg_loss;
  j["kl_loss"] = st.kl_loss;
  if (m_.critic) {
    j["value_loss"] = st.value_loss;
    j["value_clip_frac"] = st.value_clip_frac;
  }
  j["grad_norm"] = st.grad_norm;
  j["response_len"] = st.response_len;
  j["finished_frac"] = st.finished_frac;
  if (st.gap_tokens > 0) {
    j["logprob_gap_max"] = st.logprob_gap_max;
    j["logprob_gap_mean"] = st.logprob_gap_mean;
  } else {  // every sequence was stale: nothing generated by this version to compare
    j["logprob_gap_max"] = nullptr;
    j["logprob_gap_mean"] = nullptr;
  }
  j["samples"] = st.sequences;
  j["tokens"] = st.tokens;
  // Wall clock: not reproducible, reported for the time split.
  j["time_step_s"] = wall;
  j["time_gen_s"] = b.gen_s;
  j["time_score_s"] = b.score_s + st.time_score_s;  // frozen roles (worker) + critic (trainer)
  j["time_train_s"] = st.time_train_s;
  j["time_sync_s"] = publish_s + b.sync_s;
  // The new version's weights, copied once for the engine (in this process: no transfer).
  j["sync_bytes"] = static_cast<double>(m_.policy->params().size() * sizeof(float));
  j["time_wait_s"] = wait;
  j["idle_frac_trainer"] = wall > 0 ? wait / wall : 0;
  j["idle_frac_engine"] = wall > 0 ? std::max(0.0, 1 - b.gen_s / wall) : 0;
  j["samples_per_s"] = wall > 0 ? st.sequences / wall : 0;
  j["tokens_per_s"] = wall > 0 ? st.tokens / wall : 0;
  return j;
}

rl_step rl_core::update(const rollout_batch& b, double wait) {
  const rlhf_config& c = o_.rl;
  const int s = next_++;
  if (b.step != s) fail("rl: expected the batch of update {}, got {}", s, b.step);
  const update_stats st = updater_.update(b, s, static_cast<uint64_t>(s));
  rl_step out;
  out.version = static_cast<uint64_t>(s + 1);
  const auto t1 = clock_type::now();
  out.weights = weights_of(*m_.policy);
  const double publish_s = seconds_since(t1);
  out.publish = s + 1 + c.overlap < c.steps;  // a later batch is generated with it
  recent_[s + 1] = out.weights;
  while (!recent_.empty() && int64_t(recent_.begin()->first) < int64_t(s + 1) - c.overlap)
    recent_.erase(recent_.begin());
  if (!ema_.empty()) {
    const fbuffer& p = m_.policy->params();
    ema_update(ema_, std::span<const float>(p.data(), p.size()), c.ema);
  }
  const double wall = seconds_since(last_);
  last_ = clock_type::now();
  out.metrics = step_json(s, b, st, wall, wait, publish_s);
  out.last = s + 1 >= c.steps || (o_.stop && o_.stop->load()) ||
             (o_.stop_after > 0 && s + 1 >= o_.stop_after);
  if (o_.checkpoint &&
      (out.last || (o_.checkpoint_every > 0 && (s + 1) % o_.checkpoint_every == 0))) {
    rl_checkpoint ck{s + 1, updater_.optimizer_steps(), {}};
    for (auto& [v, vw] : recent_)
      if (int64_t(v) >= int64_t(s + 1) - c.overlap && int(v) <= s) ck.versions[v] = vw;
    o_.checkpoint(ck);
  }
  return out;
}

}  // namespace zf::rl
