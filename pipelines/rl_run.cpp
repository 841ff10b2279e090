#include "pipelines/rl_run.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "actors/engine.hpp"
#include "actors/engine_remote.hpp"
#include "pipelines/graph_run.hpp"
#include "pipelines/rl_models.hpp"
#include "pipelines/rl_state.hpp"
#include "pipelines/stages_rl.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/memory.hpp"
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
stages::rollout_stage::engine_factory rollout_engine_factory(const rl_setup& s,
                                                             const rl_run_options& o) {
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

void write_json(const fs::path& p, const nlohmann::json& j) {
  std::ofstream f(p);
  f << j.dump(2) << "\n";
  if (!f) fail("cannot write {}", p.string());
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

}  // namespace

namespace {

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

rl_run_result run_rl(run_config cfg, const rl_run_options& o) {
  if (o.out.empty()) fail("rl: no run folder");
  std::string start = o.checkpoint;
  fs::path resume_dir;
  if (o.resume) {  // the run's own configuration and its newest checkpoint
    resume_dir = latest_rl_step(o.out);
    if (resume_dir.empty()) fail("--resume: {} has no checkpoint", o.out);
    run_config saved;
    apply_toml(saved, storage::read_manifest(resume_dir).config_toml,
               (resume_dir / "manifest").string());
    cfg = saved;
    cfg.model.init_hf.clear();
    start = resume_dir.string();
  }
  const rl_setup s = setup_rl(std::move(cfg), o.out, start);
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);

  const rl::prompt_source prompts = checked_prompts(s);

  rl_run_result res;
  rl_roles m = make_roles(s, o, start, res);
  std::vector<float> ema;
  optimizer_config popt = s.cfg.optimizer;
  popt.lr = r.lr;
  rl::rl_core_options lo{r, popt, seed, o.stop};
  lo.stop_after = o.stop_after;
  lo.checkpoint_every = s.cfg.checkpoint.every;
  std::shared_ptr<const lm_weights> first;
  if (o.resume) {
    if (r.ema > 0) ema.resize(m.trained()->params().size());
    rl::rl_checkpoint ck;
    with_policy_state(m, s, popt, true, [&](transformer* policy, adamw* opt) {
      ck =
          load_rl_state(s, o.out, resume_dir,
                        {policy, opt, m.reference.get(), m.critic.get(), m.critic_opt.get(), &ema});
    });
    lo.start_step = ck.step;
    lo.start_optimizer_steps = ck.optimizer_steps;
    lo.start_versions = ck.versions;
    // The engine starts on version 0 only when the next rollouts use it.
    if (ck.step - r.overlap <= 0) first = ck.versions.at(0);
    keep_metrics(fs::path(o.out) / "metrics.jsonl", ck.step);
    if (!o.quiet) std::cerr << fmt::format("resuming {} at update {}\n", o.out, ck.step);
  } else {
    std::ofstream(fs::path(o.out) / "metrics.jsonl", std::ios::trunc);
  }
  if (!first)
    first =
        std::make_shared<const lm_weights>(copy_lm_weights(s.spec, m.trained()->params().data()));

  rl::reward_fn rm_reward;
  if (m.rm)
    rm_reward = [&](const rl::rollout_batch& b, std::vector<float>& out) {
      const int mb = r.micro_batch > 0 ? r.micro_batch : static_cast<int>(b.seqs.size());
      rl::reward_scores(*m.rm, b.seqs, mb, out);
    };
  rl::rl_core* core_ptr = nullptr;
  lo.checkpoint = [&](const rl::rl_checkpoint& ck) {
    with_policy_state(m, s, popt, false, [&](transformer* policy, adamw* opt) {
      res.checkpoint = save_rl_state(
          s, o.out, ck,
          {policy, opt, m.reference.get(), m.critic.get(), m.critic_opt.get(), &core_ptr->ema()},
          {{"algorithm", r.algorithm}});
    });
  };
  rl::rl_models models{m.trained(),    m.policy_opt.get(), m.reference.get(),
                       m.critic.get(), m.critic_opt.get(), m.group.get()};
  rl::rl_core core(lo, models, prompts, rm_reward);
  core_ptr = &core;
  if (!ema.empty()) core.ema() = ema;
  // The roles as a graph: engine -> rollout -> score -> policy, weights back to the rollout.
  graph g;
  auto st = stages::add_rlhf_stages(g, core, first, rollout_engine_factory(s, o));
  auto& mon =
      g.add<stages::rl_monitor_stage>("monitor", (fs::path(o.out) / "metrics.jsonl").string(),
                                      r.steps, o.quiet, res.rl, o.on_metrics);
  g.connect(st.policy->metrics, mon.metrics);
  g.connect(st.rollout->evals, mon.evals);
  run_graph(g);
  res.rl.interrupted = res.rl.steps < r.steps;

  const nlohmann::json summary = summary_of(s, m, res);
  write_json(fs::path(o.out) / "summary.json", summary);
  if (!o.quiet)
    std::cerr << fmt::format(
        "{} on {}: greedy eval reward {:.3f} -> {:.3f} (solved {:.0f}% -> {:.0f}%), checkpoint "
        "{}\n",
        r.algorithm, summary["prompts"].get<std::string>(), res.rl.eval_before, res.rl.eval_after,
        100 * res.rl.solved_before, 100 * res.rl.solved_after, res.checkpoint);
  return res;
}

sft_run_result run_sft(run_config cfg, const rl_run_options& o) {
  const rl_setup s = setup_rl(std::move(cfg), o.out, o.checkpoint);
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
  auto pairs = sft_pairs(s);
  if (pairs.size() < 2) fail("sft: {} pairs; need at least 2 (one held out)", pairs.size());
  const std::size_t held = std::min<std::size_t>(256, pairs.size() / 10 + 1);
  std::vector<rl::sft_pair> heldout(pairs.end() - held, pairs.end());
  pairs.resize(pairs.size() - held);
  auto m = make_model(s, false, seed);
  std::ofstream metrics(fs::path(o.out) / "metrics.jsonl");
  rl::sft_options so{r.sft_steps, r.sft_batch, r.sft_lr, seed, s.cfg.optimizer};
  const auto losses = rl::sft_train(*m, pairs, so, [&](int step, float loss) {
    metrics << nlohmann::json{{"step", step + 1}, {"loss", loss}}.dump() << "\n";
    if (!o.quiet && (step + 1) % 100 == 0)
      std::cerr << fmt::format("sft step {:>5}/{} loss {:.4f}\n", step + 1, r.sft_steps, loss);
  });
  sft_run_result res{losses.front(), losses.back(), rl::sft_loss(*m, heldout, 64), ""};
  nlohmann::json summary{{"loss_first", res.loss_first},
                         {"loss_last", res.loss_last},
                         {"heldout_loss", res.heldout_loss},
                         {"pairs", pairs.size()},
                         {"heldout_pairs", held}};
  write_json(fs::path(o.out) / "summary.json", summary);
  res.checkpoint = save_model(s, o.out, *m, nullptr, r.sft_steps, summary);
  if (!o.quiet)
    std::cerr << fmt::format("sft: loss {:.3f} -> {:.3f}, held-out {:.3f}, checkpoint {}\n",
                             res.loss_first, res.loss_last, res.heldout_loss, res.checkpoint);
  return res;
}

reward_run_result run_reward(run_config cfg, const rl_run_options& o) {
  const rl_setup s = setup_rl(std::move(cfg), o.out, o.checkpoint);
  const rlhf_config& r = s.cfg.rlhf;
  const uint64_t seed = static_cast<uint64_t>(s.cfg.train.seed);
  auto pairs = preference_pairs(s, 16384);
  if (pairs.size() < 10) fail("reward: {} preference pairs; need at least 10", pairs.size());
  const std::size_t held = pairs.size() / 10;
  std::vector<rl::preference_ids> heldout(pairs.end() - held, pairs.end());
  pairs.resize(pairs.size() - held);
  auto m = make_model(s, true, seed);
  rl::rm_options ro{r.rm_steps, r.rm_batch, r.rm_lr, r.rm_center, seed, s.cfg.optimizer};
  const auto losses = rl::train_reward_model(*m, pairs, ro);
  {
    std::ofstream metrics(fs::path(o.out) / "metrics.jsonl");
    for (std::size_t i = 0; i < losses.size(); ++i)
      metrics << nlohmann::json{{"step", i + 1}, {"loss", losses[i]}}.dump() << "\n";
  }
  reward_run_result res{losses.front(), losses.back(), rl::pairwise_accuracy(*m, pairs, 64),
                        rl::pairwise_accuracy(*m, heldout, 64), ""};
  nlohmann::json summary{{"loss_first", res.loss_first},
                         {"loss_last", res.loss_last},
                         {"train_accuracy", res.train_accuracy},
                         {"heldout_accuracy", res.heldout_accuracy},
                         {"pairs", pairs.size()},
                         {"heldout_pairs", held}};
  write_json(fs::path(o.out) / "summary.json", summary);
  res.checkpoint = save_model(s, o.out, *m, nullptr, r.rm_steps, summary);
  if (!o.quiet)
    std::cerr << fmt::format(
        "reward model: loss {:.3f} -> {:.3f}, pairwise accuracy train {:.3f} held-out {:.3f}, "
        "checkpoint {}\n",
        res.loss_first, res.loss_last, res.train_accuracy, res.heldout_accuracy, res.checkpoint);
  return res;
}

}  // namespace zf
