#include "pipelines/rl_session.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "actors/engine.hpp"
#include "actors/engine_remote.hpp"
#include "pipelines/rl_models.hpp"
#include "pipelines/rl_state.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/memory.hpp"
#include "runtime/monitor/run_status.hpp"
#include "runtime/rl/policy_group.hpp"
#include "runtime/rl/rl_data.hpp"
#include "runtime/rl/rl_footprint.hpp"
#include "runtime/serve/backend_pool.hpp"
#include "storage/checkpoint.hpp"

namespace zf {
namespace fs = std::filesystem;

namespace {

engine_config rollout_engine_config(const run_config& c) {
  engine_config e = c.engine;
  e.batch_invariant = true;  // the trainer's log-probs are these bits
  e.threads = c.rlhf.engine_threads;
  e.max_seqs = std::max(e.max_seqs, c.rlhf.prompts_per_step * c.rlhf.group_size);
  e.max_queue = std::max(e.max_queue, c.rlhf.prompts_per_step + c.rlhf.eval_prompts);
  return e;
}

// The rollout engine where rlhf.rollout_placement puts it: an actor of this process, or a
// process of its own (weights over Gloo in rlhf.sync_bucket_mb buckets).
stages::engine_factory rollout_engine_factory(const rl_setup& s, const rl_run_options& o) {
  const engine_config ec = rollout_engine_config(s.cfg);
  actors::engine_process_options po;
  po.tokenizer_file = fs::path(o.out) / "tokenizer.json";
  po.work_dir = o.out;
  po.executable = o.engine_executable;
  po.bucket_bytes = std::size_t(s.cfg.rlhf.sync_bucket_mb) << 20;
  const bool own_process = s.cfg.rlhf.rollout_placement == "process";
  const int n = s.cfg.rlhf.engines;
  return [ec, po, own_process, n, tok = *s.tok](
             std::shared_ptr<const lm_weights> w) -> std::unique_ptr<serve::completion_backend> {
    std::vector<std::unique_ptr<serve::completion_backend>> engines;
    for (int i = 0; i < n; ++i) {
      auto pi = po;
      if (n > 1) pi.name = fmt::format("rollout engine {}", i);
      engines.push_back(own_process ? actors::spawn_engine_process(w, tok, ec, pi)
                                    : actors::make_engine(w, tok, ec));
    }
    if (n == 1) return std::move(engines[0]);
    return std::make_unique<serve::backend_pool>(std::move(engines));
  };
}

// The warm-up of a policy that starts from scratch.
void warm_up(const rl_setup& s, transformer& policy, const rl_run_options& o, rl_run_result& res) {
  const rlhf_config& r = s.cfg.rlhf;
  if (r.sft_steps <= 0 || !o.checkpoint.empty() || !s.cfg.model.init_hf.empty()) return;
  rl::sft_options so{r.sft_steps, r.sft_batch, r.sft_lr, static_cast<uint64_t>(s.cfg.train.seed),
                     s.cfg.optimizer};
  const auto losses = rl::sft_train(policy, sft_pairs(s), so);
  res.sft_loss_first = losses.front();
  res.sft_loss_last = losses.back();
  if (!o.quiet)
    std::cerr << fmt::format("sft warm-up: {} steps, loss {:.3f} -> {:.3f}\n", r.sft_steps,
                             res.sft_loss_first, res.sft_loss_last);
}

// The roles' models of a run: the policy (warmed up when it starts from scratch), the frozen
// reference, a reward model, and PPO's critic.
struct rl_roles {
  std::unique_ptr<transformer> policy, reference, critic, rm;
  std::unique_ptr<adamw> policy_opt, critic_opt;
  // train.ranks > 1: the policy's ZeRO ranks (the policy is their rank 0's model; policy_opt is
  // then only the full-size view checkpoints read and write, filled from the ranks on demand).
  std::unique_ptr<rl::policy_group> group;
  transformer* trained() { return group ? &group->model(0) : policy.get(); }
};

// Runs f on the policy's checkpoint form, a whole model and its AdamW moments: the policy's own,
// or (ZeRO ranks) a transient full copy gathered from the ranks before and scattered back after
// (load: true) f.
template <class F>
void with_policy_state(rl_roles& m, const rl_setup& s, const optimizer_config& popt, bool load,
                       F f) {
  if (!m.group) return f(m.policy.get(), m.policy_opt.get());
  transformer view(s.spec, true, false);
  adamw opt(view.layout(), 0, view.layout().total, popt);
  if (!load) m.group->export_state(view.params().data(), opt.m().data(), opt.v().data());
  f(&view, &opt);
  if (load) m.group->import_state(view.params().data(), opt.m().data(), opt.v().data());
}

rl_roles make_roles(const rl_setup& s, const rl_run_options& o, const std::string& start,
                    rl_run_result& res) {
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
  rl_roles m;
  m.policy = make_model(s, false, seed);
  rl_run_options w = o;
  w.checkpoint = start;
  warm_up(s, *m.policy, w, res);
  if (rl::kl_coef_in_effect(r) > 0) {
    m.reference = std::make_unique<transformer>(s.spec, true, false);
    m.reference->set_precision(m.policy->precision());
    std::copy_n(m.policy->params().data(), m.policy->params().size(), m.reference->params().data());
  }
  if (!r.reward_model.empty()) m.rm = load_reward_model(s, r.reward_model);
  optimizer_config popt = s.cfg.optimizer;
  popt.lr = r.lr;
  m.policy_opt = std::make_unique<adamw>(m.policy->layout(), 0, m.policy->layout().total, popt);
  if (r.algorithm == "ppo") {
    // DeepSpeed-Chat starts the critic from the reward model; without one, from the policy.
    m.critic = make_model(s, true, seed);
    if (m.rm) {
      std::copy_n(m.rm->params().data(), m.rm->params().size(), m.critic->params().data());
    } else {
      std::fill_n(m.critic->param("v_head.weight"), s.spec.hidden, 0.0f);
      for (auto& p : m.policy->layout().params)
        std::copy_n(m.policy->params().data() + p.offset, p.numel, m.critic->param(p.name));
    }
    optimizer_config copt = s.cfg.optimizer;
    copt.lr = r.critic_lr;
    m.critic_opt = std::make_unique<adamw>(m.critic->layout(), 0, m.critic->layout().total, copt);
  }
  if (s.cfg.train.ranks > 1) {  // the ranks hold the policy from here on
    m.group = std::make_unique<rl::policy_group>(s.spec, popt, s.cfg.train.ranks, s.cfg.zero.stage,
                                                 m.policy->params().data());
    for (int r = 0; r < m.group->world(); ++r) {
      m.group->model(r).set_precision(m.policy->precision());
      m.group->rank(r).set_reduce_bf16(s.cfg.train.reduce_dtype == "bf16");
    }
    m.policy.reset();
    m.policy_opt.reset();
  }
  return m;
}

nlohmann::json summary_of(const rl_setup& s, const rl_roles& m, const rl_run_result& res) {
  const rlhf_config& r = s.cfg.rlhf;
  nlohmann::json j;
  j["algorithm"] = r.algorithm;
  j["prompts"] = r.prompts.empty() ? "task:" + r.task : r.prompts;
  j["reward"] = m.rm ? (r.rule_reward > 0 ? "rule+model" : "model") : "rule";
  j["steps"] = res.rl.steps;
  j["overlap"] = r.overlap;
  j["eval_reward_before"] = res.rl.eval_before;
  j["eval_reward_after"] = res.rl.eval_after;
  j["eval_solved_before"] = res.rl.solved_before;
  j["eval_solved_after"] = res.rl.solved_after;
  j["sft_loss_first"] = res.sft_loss_first;
  j["sft_loss_last"] = res.sft_loss_last;
  j["interrupted"] = res.rl.interrupted;
  for (auto& [lag, n] : res.rl.lag_histogram) j["lag_histogram"][std::to_string(lag)] = n;
  return j;
}

// metrics.jsonl of a resumed run: its first `keep` lines (the updates the checkpoint holds).
void keep_metrics(const fs::path& file, int keep) {
  std::ifstream in(file);
  std::string text, line;
  for (int i = 0; i < keep && std::getline(in, line); ++i) text += line + "\n";
  in.close();
  std::ofstream(file, std::ios::trunc) << text;
}

// The run's prompts, checked against the policy's context, and every role's memory checked
// before any is allocated: never an out-of-memory half-way through.
rl::prompt_source checked_prompts(const rl_setup& s) {
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
  const rl::prompt_source prompts =
      r.prompts.empty()
          ? rl::prompt_source::from_task(s.task, *s.tok, seed, r.prompts_per_step, r.eval_prompts)
          : rl::prompt_source::from_records(rl::read_prompts(r.prompts), *s.tok, seed,
                                            r.prompts_per_step, r.eval_prompts);
  if (prompts.longest_prompt() + r.max_new_tokens > s.spec.max_positions)
    fail(
        "rl: prompts of up to {} tokens + rlhf.max_new_tokens {} exceed the policy's context of "
        "{} (model.n_positions)",
        prompts.longest_prompt(), r.max_new_tokens, s.spec.max_positions);
  {
    run_config as_built = s.cfg;
    as_built.engine = rollout_engine_config(s.cfg);
    rl::check_rl_footprint(
        rl::estimate_rl_footprint(as_built, prompts.longest_prompt(), !r.reward_model.empty()),
        machine_memory_bytes());
  }

  return prompts;
}

}  // namespace

// What prepare() builds; the members the core refers to stay where they are.
struct rl_session::state {
  fs::path resume_dir;
  std::unique_ptr<rl_setup> s;
  std::unique_ptr<rl::prompt_source> prompts;
  rl_run_result res;
  rl_roles m;
  std::vector<float> ema;
  std::shared_ptr<const lm_weights> first;
  std::unique_ptr<rl::rl_core> core;
  std::unique_ptr<monitor::span_log> spans;
  std::unique_ptr<monitor::run_status_writer> status;  // run.json; failed if never finished
  bool finished = false;                               // summary.json written
};

rl_session::rl_session(run_config cfg, rl_run_options o)
    : cfg_(std::move(cfg)), o_(std::move(o)), st_(std::make_unique<state>()) {
  if (o_.out.empty()) fail("rl: no run folder");
}

rl_session::~rl_session() = default;

void rl_session::prepare() {
  std::call_once(once_, [this] {
    state& t = *st_;
    std::string start = o_.checkpoint;
    if (o_.resume) {  // the run's own configuration and its newest checkpoint
      t.resume_dir = latest_rl_step(o_.out);
      if (t.resume_dir.empty()) fail("--resume: {} has no checkpoint", o_.out);
      run_config saved;
      apply_toml(saved, storage::read_manifest(t.resume_dir).config_toml,
                 (t.resume_dir / "manifest").string());
      cfg_ = saved;
      cfg_.model.init_hf.clear();
      start = t.resume_dir.string();
    }
    t.s = std::make_unique<rl_setup>(setup_rl(cfg_, o_.out, start));
    const rl_setup& s = *t.s;
    const rlhf_config& r = s.cfg.rlhf;
    const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
    t.prompts = std::make_unique<rl::prompt_source>(checked_prompts(s));
    t.m = make_roles(s, o_, start, t.res);
    optimizer_config popt = s.cfg.optimizer;
    popt.lr = r.lr;
    rl::rl_core_options lo{r, popt, seed, o_.stop};
    lo.stop_after = o_.stop_after;
    lo.checkpoint_every = s.cfg.checkpoint.every;
    if (o_.resume) {
      if (r.ema > 0) t.ema.resize(t.m.trained()->params().size());
      rl::rl_checkpoint ck;
      with_policy_state(t.m, s, popt, true, [&](transformer* policy, adamw* opt) {
        ck = load_rl_state(
            s, o_.out, t.resume_dir,
            {policy, opt, t.m.reference.get(), t.m.critic.get(), t.m.critic_opt.get(), &t.ema});
      });
      lo.start_step = ck.step;
      lo.start_optimizer_steps = ck.optimizer_steps;
      lo.start_versions = ck.versions;
      // The engine starts on version 0 only when the next rollouts use it.
      if (ck.step - r.overlap <= 0) t.first = ck.versions.at(0);
      keep_metrics(fs::path(o_.out) / "metrics.jsonl", ck.step);
      if (!o_.quiet) std::cerr << fmt::format("resuming {} at update {}\n", o_.out, ck.step);
    } else {
      std::ofstream(fs::path(o_.out) / "metrics.jsonl", std::ios::trunc);
    }
    if (!t.first)
      t.first = std::make_shared<const lm_weights>(
          copy_lm_weights(s.spec, t.m.trained()->params().data()));
    rl::reward_fn rm_reward;
    if (t.m.rm)
      rm_reward = [&t, mb = r.micro_batch](const rl::rollout_batch& b, std::vector<float>& out) {
        rl::reward_scores(*t.m.rm, b.seqs, mb > 0 ? mb : static_cast<int>(b.seqs.size()), out);
      };
    lo.checkpoint = [this, &t, popt](const rl::rl_checkpoint& ck) {
      with_policy_state(t.m, *t.s, popt, false, [&](transformer* policy, adamw* opt) {
        t.res.checkpoint = save_rl_state(*t.s, o_.out, ck,
                                         {policy, opt, t.m.reference.get(), t.m.critic.get(),
                                          t.m.critic_opt.get(), &t.core->ema()},
                                         {{"algorithm", t.s->cfg.rlhf.algorithm}});
      });
    };
    rl::rl_models models{t.m.trained(),    t.m.policy_opt.get(), t.m.reference.get(),
                         t.m.critic.get(), t.m.critic_opt.get(), t.m.group.get()};
    t.core = std::make_unique<rl::rl_core>(lo, models, *t.prompts, rm_reward);
    if (!t.ema.empty()) t.core->ema() = t.ema;
    t.spans = std::make_unique<monitor::span_log>(fs::path(o_.out) / "spans.jsonl");
    t.status = std::make_unique<monitor::run_status_writer>(o_.out, "rl", to_toml(s.cfg), r.steps);
  });
  if (!st_->core) fail("rl: the run could not be set up (see the first error)");
}

rl::rl_core& rl_session::core() {
  prepare();
  return *st_->core;
}

std::shared_ptr<const lm_weights> rl_session::first() {
  prepare();
  return st_->first;
}

stages::engine_factory rl_session::engine() {
  prepare();
  return rollout_engine_factory(*st_->s, o_);
}

monitor::span_log* rl_session::spans() {
  prepare();
  return st_->spans.get();
}

rl::rl_result& rl_session::result() {
  return st_->res.rl;
}

std::string rl_session::metrics_file() const {
  return (fs::path(o_.out) / "metrics.jsonl").string();
}

int rl_session::steps() {
  return st_->s ? st_->s->cfg.rlhf.steps : cfg_.rlhf.steps;
}

rl_run_result rl_session::finish() {
  prepare();
  state& t = *st_;
  if (t.finished) return t.res;
  t.finished = true;
  t.spans->flush();
  const rl_setup& s = *t.s;
  const rlhf_config& r = s.cfg.rlhf;
  t.res.rl.interrupted = t.res.rl.steps < r.steps;
  if (t.res.rl.interrupted)
    t.status->finish(monitor::run_state::interrupted,
                     fmt::format("stopped after update {} of {}", t.res.rl.steps, r.steps));
  else
    t.status->finish(monitor::run_state::finished);
  const nlohmann::json summary = summary_of(s, t.m, t.res);
  write_json_file(fs::path(o_.out) / "summary.json", summary);
  if (!o_.quiet)
    std::cerr << fmt::format(
        "{} on {}: greedy eval reward {:.3f} -> {:.3f} (solved {:.0f}% -> {:.0f}%), checkpoint "
        "{}\n",
        r.algorithm, summary["prompts"].get<std::string>(), t.res.rl.eval_before,
        t.res.rl.eval_after, 100 * t.res.rl.solved_before, 100 * t.res.rl.solved_after,
        t.res.checkpoint);
  return t.res;
}

void rl_session::record_failure(const std::string& why) {
  if (st_->status) st_->status->finish(monitor::run_state::failed, why);
}

void add_rl_stage_types(stage_registry& reg,
                        std::function<std::shared_ptr<rl_session>(const run_config&)> session) {
  reg.add("rollout", {"the rollout engine(s) (rlhf.engines, rlhf.rollout_placement) of an RL run: "
                      "in weights (policy_weights); out rollouts, evals (rl_eval)",
                      {},
                      [session](const stage_args& a) -> std::unique_ptr<stage> {
                        return std::make_unique<stages::rollout_stage>(session(a.cfg));
                      }});
  reg.add("score",
          {"an RL run's frozen roles (reference log-probs, rule and reward-model rewards): "
           "in -> out rollouts",
           {},
           [session](const stage_args& a) -> std::unique_ptr<stage> {
             return std::make_unique<stages::score_stage>(session(a.cfg));
           }});
  reg.add("policy", {"an RL run's policy update (rlhf.algorithm: grpo, rloo, ppo; train.ranks "
                     "ZeRO ranks): in rollouts; out weights (policy_weights), metrics (rl_metrics)",
                     {},
                     [session](const stage_args& a) -> std::unique_ptr<stage> {
                       return std::make_unique<stages::policy_stage>(session(a.cfg));
                     }});
  reg.add("rl_monitor",
          {"an RL run's metrics.jsonl and progress line: in metrics (rl_metrics), evals (rl_eval, "
           "optional)",
           {},
           [session](const stage_args& a) -> std::unique_ptr<stage> {
             const std::shared_ptr<rl_session> s = session(a.cfg);
             const rl_run_options& o = s->options();
             return std::make_unique<stages::rl_monitor_stage>(s->metrics_file(), s->steps(),
                                                               o.quiet, s->result(), o.on_metrics,
                                                               [w = std::weak_ptr<rl_session>(s)] {
                                                                 if (auto p = w.lock()) p->finish();
                                                               });
           }});
}

const std::string& default_rl_graph() {
  static const std::string text =
#include "rlhf_graph.inc"  // examples/graphs/rlhf.toml (pipelines/CMakeLists.txt)
      ;
  return text;
}

}  // namespace zf
