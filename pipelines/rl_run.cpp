#include "pipelines/rl_run.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "actors/engine.hpp"
#include "pipelines/rl_models.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/memory.hpp"
#include "runtime/rl/rl_data.hpp"
#include "runtime/rl/rl_footprint.hpp"
#include "runtime/text/byte_vocab.hpp"

namespace zf {
namespace fs = std::filesystem;

void apply_rl_task_defaults(run_config& c) {
  c.model.arch = "gpt2";
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_embd = 64;
  c.model.n_positions = 32;
  c.model.vocab_size = kByteVocabSize;
  c.train.seq_len = c.model.n_positions;  // unused by RL, but checked against the context
  c.optimizer.weight_decay = 0.0;
}

namespace {

engine_config rollout_engine_config(const run_config& c) {
  engine_config e = c.engine;
  e.batch_invariant = true;  // the trainer's log-probs are these bits
  e.threads = c.rlhf.engine_threads;
  e.max_seqs = std::max(e.max_seqs, c.rlhf.prompts_per_step * c.rlhf.group_size);
  e.max_queue = std::max(e.max_queue, c.rlhf.prompts_per_step + c.rlhf.eval_prompts);
  return e;
}

std::string gap_text(const nlohmann::json& j) {
  return j["logprob_gap_max"].is_null() ? "n/a"
                                        : fmt::format("{:.2g}", j["logprob_gap_max"].get<double>());
}

void print_step(const nlohmann::json& j, int steps) {
  auto num = [&](const char* k) { return j[k].get<double>(); };
  std::cerr << fmt::format(
      "step {:>4}/{} reward {:.3f}±{:.3f} kl {:.4f} ent {:.3f} clip {:.3f} len {:.1f} gap {} "
      "lag {} | gen {:.2f}s train {:.2f}s sync {:.3f}s idle trainer {:.0f}% engine {:.0f}%\n",
      j["step"].get<int>(), steps, num("reward_mean"), num("reward_std"), num("kl"), num("entropy"),
      num("clip_frac"), num("response_len"), gap_text(j), j["version_lag"].get<int>(),
      num("time_gen_s"), num("time_train_s"), num("time_sync_s"), 100 * num("idle_frac_trainer"),
      100 * num("idle_frac_engine"));
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

rl_run_result run_rl(run_config cfg, const rl_run_options& o) {
  if (o.out.empty()) fail("rl: no run folder");
  const rl_setup s = setup_rl(std::move(cfg), o.out, o.checkpoint);
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
  {  // every role's memory, before any is allocated: never an out-of-memory half-way through
    run_config as_built = s.cfg;
    as_built.engine = rollout_engine_config(s.cfg);
    rl::check_rl_footprint(
        rl::estimate_rl_footprint(as_built, prompts.longest_prompt(), !r.reward_model.empty()),
        machine_memory_bytes());
  }

  rl_run_result res;
  auto policy = make_model(s, false, seed);
  warm_up(s, *policy, o, res);
  std::unique_ptr<transformer> reference, critic, rm;
  if (rl::kl_coef_in_effect(r) > 0) {
    reference = std::make_unique<transformer>(s.spec, true, false);
    std::copy_n(policy->params().data(), policy->params().size(), reference->params().data());
  }
  if (!r.reward_model.empty()) rm = load_reward_model(s, r.reward_model);
  optimizer_config popt = s.cfg.optimizer;
  popt.lr = r.lr;
  adamw policy_opt(policy->layout(), 0, policy->layout().total, popt);
  std::unique_ptr<adamw> critic_opt;
  if (r.algorithm == "ppo") {
    // DeepSpeed-Chat starts the critic from the reward model; without one, from the policy.
    critic = make_model(s, true, seed);
    if (rm) {
      std::copy_n(rm->params().data(), rm->params().size(), critic->params().data());
    } else {
      std::fill_n(critic->param("v_head.weight"), s.spec.hidden, 0.0f);
      for (auto& p : policy->layout().params)
        std::copy_n(policy->params().data() + p.offset, p.numel, critic->param(p.name));
    }
    optimizer_config copt = s.cfg.optimizer;
    copt.lr = r.critic_lr;
    critic_opt = std::make_unique<adamw>(critic->layout(), 0, critic->layout().total, copt);
  }

  auto engine = actors::make_engine(
      std::make_shared<const lm_weights>(copy_lm_weights(s.spec, policy->params().data())), *s.tok,
      rollout_engine_config(s.cfg));

  rl::reward_fn rm_reward;
  if (rm)
    rm_reward = [&](const rl::rollout_batch& b, std::vector<float>& out) {
      const int mb = r.micro_batch > 0 ? r.micro_batch : static_cast<int>(b.seqs.size());
      rl::reward_scores(*rm, b.seqs, mb, out);
    };
  std::ofstream metrics(fs::path(o.out) / "metrics.jsonl");
  rl::rl_loop_options lo{r, popt, seed, o.stop};
  rl::rl_models models{policy.get(), &policy_opt, reference.get(), critic.get(), critic_opt.get()};
  rl::rl_loop loop(lo, models, *engine, prompts, rm_reward, [&](const nlohmann::json& j) {
    metrics << j.dump() << "\n" << std::flush;
    if (!o.quiet) print_step(j, r.steps);
    if (o.on_metrics) o.on_metrics(j);
  });
  res.rl = loop.run();

  nlohmann::json summary;
  summary["algorithm"] = r.algorithm;
  summary["prompts"] = r.prompts.empty() ? "task:" + r.task : r.prompts;
  summary["reward"] = rm ? (r.rule_reward > 0 ? "rule+model" : "model") : "rule";
  summary["steps"] = res.rl.steps;
  summary["overlap"] = r.overlap;
  summary["eval_reward_before"] = res.rl.eval_before;
  summary["eval_reward_after"] = res.rl.eval_after;
  summary["eval_solved_before"] = res.rl.solved_before;
  summary["eval_solved_after"] = res.rl.solved_after;
  summary["sft_loss_first"] = res.sft_loss_first;
  summary["sft_loss_last"] = res.sft_loss_last;
  summary["interrupted"] = res.rl.interrupted;
  for (auto& [lag, n] : res.rl.lag_histogram) summary["lag_histogram"][std::to_string(lag)] = n;
  write_json(fs::path(o.out) / "summary.json", summary);
  res.checkpoint = save_model(s, o.out, *policy, &policy_opt, res.rl.steps, summary);
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
