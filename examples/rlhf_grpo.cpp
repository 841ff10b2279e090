// rlhf_grpo: a GRPO run composed in the DSL from its role stages. A tiny GPT-2 on the byte
// vocabulary is SFT-warmed on `reverse` demonstrations of which half are wrong, then GRPO against
// the task's rule reward, with rollouts one update ahead of training (overlap 1):
//
//   rollout (serving engine) --rollouts--> score (reference, rule) --rollouts--> policy
//      ^------------------------------ weights, versioned -------------------------'
//   policy --metrics--> monitor <--evals-- rollout
//
//   build/examples/rlhf_grpo [out_dir]     (about 15 s on two cores; exits 1 if it did not learn)
#include <iostream>

#include "pipelines/graph_run.hpp"
#include "pipelines/rl_models.hpp"
#include "pipelines/rl_run.hpp"
#include "pipelines/stages_rl.hpp"
#include "runtime/rl/rl_core.hpp"
#include "runtime/rl/tasks.hpp"

int main(int argc, char** argv) try {
  namespace rl = zf::rl;
  zf::run_config cfg;
  rl::apply_task_defaults(cfg);  // 2 layers, n_embd 64, byte vocabulary
  cfg.rlhf.algorithm = "grpo";
  cfg.rlhf.overlap = 1;
  const std::string out = argc > 1 ? argv[1] : "runs/rlhf_grpo";
  const zf::rl_setup s = zf::setup_rl(cfg, out, "");
  const auto& r = s.cfg.rlhf;

  // The policy, warmed up on noisy demonstrations; the reference is its frozen copy.
  auto policy = zf::make_model(s, false, 1);
  rl::sft_train(*policy, zf::sft_pairs(s),
                {r.sft_steps, r.sft_batch, r.sft_lr, 1, s.cfg.optimizer});
  zf::transformer reference(s.spec, true, false);
  std::copy_n(policy->params().data(), policy->params().size(), reference.params().data());
  zf::optimizer_config opt = s.cfg.optimizer;
  opt.lr = r.lr;
  zf::adamw policy_opt(policy->layout(), 0, policy->layout().total, opt);

  // Prompts from the task, the roles' logic, and the graph of their stages.
  const auto prompts = rl::prompt_source::from_task(s.task, *s.tok, 1, r.prompts_per_step, 64);
  rl::rl_core core({r, opt, 1}, {policy.get(), &policy_opt, &reference, nullptr, nullptr}, prompts,
                   nullptr);
  zf::engine_config engine;
  engine.batch_invariant = true;  // the trainer's log-probs are the engine's bits
  engine.max_seqs = r.prompts_per_step * r.group_size;
  engine.threads = 1;
  rl::rl_result result;

  // The role stages over the core, the engine serving the warmed-up policy as version 0.
  const auto roles = zf::stages::fixed_roles(
      core,
      std::make_shared<const zf::lm_weights>(zf::copy_lm_weights(s.spec, policy->params().data())),
      zf::stages::local_engine(*s.tok, engine));
  zf::graph g;
  auto& rollout = g.add<zf::stages::rollout_stage>("rollout", roles);
  auto& score = g.add<zf::stages::score_stage>("score", roles);
  auto& train = g.add<zf::stages::policy_stage>("policy", roles);
  auto& monitor = g.add<zf::stages::rl_monitor_stage>("monitor", out + "/metrics.jsonl", r.steps,
                                                      /*quiet=*/true, result);
  g.connect(rollout.rollouts, score.in);
  g.connect(score.out, train.rollouts);
  g.connect(train.weights, rollout.weights, r.overlap + 2);  // the cycle's credit bound
  g.connect(train.metrics, monitor.metrics);
  g.connect(rollout.evals, monitor.evals);
  zf::run_graph(g);

  const auto& m = result.metrics;
  std::cout << "rlhf_grpo: " << m.size() << " updates, mean reward "
            << m.front()["reward_mean"].get<double>() << " -> "
            << m.back()["reward_mean"].get<double>() << ", greedy eval " << result.eval_before
            << " -> " << result.eval_after << ", on-policy log-prob gap "
            << m.front()["logprob_gap_max"].get<double>() << "\n";
  return result.eval_after >= 0.9 &&
                 m.back()["reward_mean"].get<double>() > m.front()["reward_mean"].get<double>()
             ? 0
             : 1;
} catch (const std::exception& e) {
  std::cerr << "rlhf_grpo: " << e.what() << "\n";
  return 1;
}
