#include "pipelines/rl_run.hpp"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "actors/engine.hpp"
#include "runtime/core/error.hpp"
#include "runtime/rl/rl_data.hpp"
#include "runtime/rl/sft.hpp"
#include "runtime/text/byte_vocab.hpp"
#include "storage/checkpoint.hpp"

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

double effective_kl(const rlhf_config& r) {
  if (r.kl_coef >= 0) return r.kl_coef;
  return r.algorithm == "grpo" ? 0.04 : r.algorithm == "rloo" ? 0.05 : 0.1;
}

std::vector<rl::sft_pair> warmup_pairs(const run_config& c, const tokenizer& tok,
                                       const rl::task& task) {
  std::vector<rl::sft_record> records;
  if (!c.rlhf.sft_data.empty()) {
    records = rl::read_sft(c.rlhf.sft_data);
  } else {  // the task's, a share sft_noise of them answered wrong (seeded)
    std::mt19937_64 rng(static_cast<uint64_t>(c.train.seed) ^ 0x5f7ull);
    for (auto& p : rl::preferences_from_task(task, c.train.seed ^ 0x5f7ull, 4096)) {
      const bool wrong = double(rng() >> 11) * 0x1.0p-53 < c.rlhf.sft_noise;
      records.push_back({p.prompt, wrong ? p.rejected : p.chosen, 0});
    }
  }
  std::vector<rl::sft_pair> pairs;
  for (auto& r : records) {
    rl::sft_pair p{tok.encode_prompt(r.prompt), tok.encode(r.response)};
    p.response.push_back(tok.eot());
    pairs.push_back(std::move(p));
  }
  return pairs;
}

engine_config rollout_engine_config(const run_config& c) {
  engine_config e = c.engine;
  e.batch_invariant = true;  // the trainer's log-probs are these bits
  e.threads = c.rlhf.engine_threads;
  e.max_seqs = std::max(e.max_seqs, c.rlhf.prompts_per_step * c.rlhf.group_size);
  e.max_queue = std::max(e.max_queue, c.rlhf.prompts_per_step + c.rlhf.eval_prompts);
  e.block_size = 16;
  return e;
}

void print_step(const nlohmann::json& j, int steps) {
  auto num = [&](const char* k) { return j[k].is_null() ? -1.0 : j[k].get<double>(); };
  std::cerr << fmt::format(
      "step {:>4}/{} reward {:.3f}±{:.3f} kl {:.4f} ent {:.3f} clip {:.3f} len {:.1f} gap {:.2g} "
      "lag {} | gen {:.2f}s train {:.2f}s sync {:.3f}s idle trainer {:.0f}% engine {:.0f}%\n",
      j["step"].get<int>(), steps, num("reward_mean"), num("reward_std"), num("kl"), num("entropy"),
      num("clip_frac"), num("response_len"), num("logprob_gap_max"), j["version_lag"].get<int>(),
      num("time_gen_s"), num("time_train_s"), num("time_sync_s"), 100 * num("idle_frac_trainer"),
      100 * num("idle_frac_engine"));
}

}  // namespace

rl_run_result run_rl(run_config cfg, const rl_run_options& o) {
  const rlhf_config& r = cfg.rlhf;
  if (o.out.empty()) fail("rl: no run folder");
  if (!cfg.model.init_hf.empty())
    fail("rl: model.init_hf: starting RL from a Hugging Face folder is not supported yet");
  if (r.task_max_len < r.task_min_len)
    fail("rlhf.task_max_len: expected >= rlhf.task_min_len ({}), got {}", r.task_min_len,
         r.task_max_len);
  fs::create_directories(o.out);
  // The byte vocabulary, written beside the run so that its checkpoints serve as they are.
  const fs::path tok_file = fs::absolute(fs::path(o.out) / "tokenizer.json");
  {
    std::ofstream f(tok_file);
    f << byte_level_tokenizer_json();
    if (!f) fail("rl: cannot write {}", tok_file.string());
  }
  const tokenizer tok = tokenizer::load_hf(tok_file);
  cfg.data.tokenizer = tok_file.parent_path().string();
  cfg.model.vocab_size = tok.vocab_size();
  validate(cfg);
  model_spec spec = spec_of(cfg.model);
  spec.eos_id = tok.eot();

  rl::task_options topt;
  topt.min_len = r.task_min_len;
  topt.max_len = r.task_max_len;
  std::shared_ptr<const rl::task> task = rl::make_task(r.task, topt);
  const uint64_t seed = static_cast<uint64_t>(cfg.train.seed);

  rl_run_result res;
  transformer policy(spec);
  policy.init_weights(seed);
  if (r.sft_steps > 0) {
    rl::sft_options so;
    so.steps = r.sft_steps;
    so.batch = r.sft_batch;
    so.lr = r.sft_lr;
    so.seed = seed;
    so.opt = cfg.optimizer;
    const auto losses = rl::sft_train(policy, warmup_pairs(cfg, tok, *task), so);
    res.sft_loss_first = losses.front();
    res.sft_loss_last = losses.back();
    if (!o.quiet)
      std::cerr << fmt::format("sft warm-up: {} steps, loss {:.3f} -> {:.3f}\n", r.sft_steps,
                               res.sft_loss_first, res.sft_loss_last);
  }
  const int longest = r.prompts.empty() ? 0 : 0;
  (void)longest;

  std::unique_ptr<transformer> reference, critic;
  if (effective_kl(r) > 0) {
    reference = std::make_unique<transformer>(spec, true, false);
    std::copy_n(policy.params().data(), policy.params().size(), reference->params().data());
  }
  optimizer_config popt = cfg.optimizer;
  popt.lr = r.lr;
  adamw policy_opt(policy.layout(), 0, policy.layout().total, popt);
  std::unique_ptr<adamw> critic_opt;
  if (r.algorithm == "ppo") {
    model_spec cs = spec;
    cs.value_head = true;
    critic = std::make_unique<transformer>(cs);
    critic->params().zero();
    for (auto& p : policy.layout().params)  // the policy's body; v_head starts at 0
      std::copy_n(policy.params().data() + p.offset, p.numel,
                  critic->params().data() + critic->layout().at(p.name).offset);
    optimizer_config copt = cfg.optimizer;
    copt.lr = r.critic_lr;
    critic_opt = std::make_unique<adamw>(critic->layout(), 0, critic->layout().total, copt);
  }

  const rl::prompt_source prompts =
      r.prompts.empty()
          ? rl::prompt_source::from_task(task, tok, seed, r.prompts_per_step, r.eval_prompts)
          : rl::prompt_source::from_records(rl::read_prompts(r.prompts), tok, seed,
                                            r.prompts_per_step, r.eval_prompts);
  if (prompts.longest_prompt() + r.max_new_tokens > spec.max_positions)
    fail(
        "rl: prompts of up to {} tokens + rlhf.max_new_tokens {} exceed the policy's context of "
        "{} (model.n_positions)",
        prompts.longest_prompt(), r.max_new_tokens, spec.max_positions);

  auto engine = actors::make_engine(
      std::make_shared<const lm_weights>(copy_lm_weights(spec, policy.params().data())), tok,
      rollout_engine_config(cfg));

  std::ofstream metrics(fs::path(o.out) / "metrics.jsonl");
  rl::rl_loop_options lo{r, popt, seed, o.stop};
  rl::rl_models models{&policy, &policy_opt, reference.get(), critic.get(), critic_opt.get()};
  rl::rl_loop loop(lo, models, *engine, prompts, nullptr, [&](const nlohmann::json& j) {
    metrics << j.dump() << "\n" << std::flush;
    if (!o.quiet) print_step(j, r.steps);
    if (o.on_metrics) o.on_metrics(j);
  });
  res.rl = loop.run();

  nlohmann::json summary;
  summary["algorithm"] = r.algorithm;
  summary["task"] = r.prompts.empty() ? r.task : r.prompts;
  summary["steps"] = res.rl.steps;
  summary["eval_reward_before"] = res.rl.eval_before;
  summary["eval_reward_after"] = res.rl.eval_after;
  summary["eval_solved_before"] = res.rl.solved_before;
  summary["eval_solved_after"] = res.rl.solved_after;
  summary["sft_loss_first"] = res.sft_loss_first;
  summary["sft_loss_last"] = res.sft_loss_last;
  for (auto& [lag, n] : res.rl.lag_histogram) summary["lag_histogram"][std::to_string(lag)] = n;
  std::ofstream(fs::path(o.out) / "summary.json") << summary.dump(2) << "\n";

  storage::checkpoint_view v;
  v.step = res.rl.steps;
  v.config_toml = to_toml(cfg);
  v.layout = &policy.layout();
  v.params = policy.params().data();
  v.exp_avg = policy_opt.m().data();
  v.exp_avg_sq = policy_opt.v().data();
  v.state = summary;
  res.checkpoint = storage::save_checkpoint(fs::path(o.out) / "checkpoints", v).string();
  if (!o.quiet)
    std::cerr << fmt::format(
        "{} on {}: greedy eval reward {:.3f} -> {:.3f} (solved {:.0f}% -> {:.0f}%), checkpoint "
        "{}\n",
        r.algorithm, summary["task"].get<std::string>(), res.rl.eval_before, res.rl.eval_after,
        100 * res.rl.solved_before, 100 * res.rl.solved_after, res.checkpoint);
  return res;
}

}  // namespace zf
