// The `rlhf.*` keys (runtime/core/config.hpp, rlhf_config): declared here, beside the other
// sections' in config.cpp, through the same schema.
#include "runtime/core/config_keys.hpp"

namespace zf::config_detail {

std::vector<key> rlhf_keys() {
  return {
      ZF_ENUM("rlhf.algorithm", rlhf.algorithm, "policy optimisation: grpo, rloo or ppo", "grpo",
              "rloo", "ppo"),
      ZF_ENUM("rlhf.task", rlhf.task,
              "built-in task with a checkable answer (data generated, seeded)", "reverse", "add",
              "copy", "sort"),
      ZF_INT("rlhf.task_min_len", rlhf.task_min_len, 1, 16, "shortest task string"),
      ZF_INT("rlhf.task_max_len", rlhf.task_max_len, 1, 16, "longest task string"),
      ZF_STR("rlhf.prompts", rlhf.prompts,
             "JSON-lines prompts file ({\"prompt\", \"answer\"?}); \"\" = the task's generator"),
      ZF_STR(
          "rlhf.sft_data", rlhf.sft_data,
          "JSON-lines SFT pairs ({\"prompt\", \"response\"}) for the warm-up; \"\" = the task's"),
      ZF_STR("rlhf.reward_model", rlhf.reward_model,
             "reward model checkpoint folder (`zeroflow reward`); \"\" = rule reward only"),
      ZF_STR("rlhf.preference_data", rlhf.preference_data,
             "JSON-lines preference pairs ({\"prompt\", \"chosen\", \"rejected\"}) for `zeroflow "
             "reward`; \"\" = the task's"),
      ZF_INT("rlhf.rm_steps", rlhf.rm_steps, 1, 1 << 24, "reward model training steps"),
      ZF_NUM("rlhf.rm_lr", rlhf.rm_lr, 0, 10, "reward model learning rate"),
      ZF_INT("rlhf.rm_batch", rlhf.rm_batch, 1, 1 << 16, "preference pairs per reward model step"),
      ZF_NUM("rlhf.rm_center", rlhf.rm_center, 0, 1e3,
             "coefficient of mean((r_chosen + r_rejected)^2): keeps scores near 0"),
      ZF_NUM("rlhf.rule_reward", rlhf.rule_reward, 0, 1e6,
             "weight of the task's rule reward, summed with the reward model's"),
      ZF_INT("rlhf.steps", rlhf.steps, 1, 1 << 24, "policy updates"),
      ZF_INT("rlhf.prompts_per_step", rlhf.prompts_per_step, 1, 1 << 16, "prompts per update"),
      ZF_INT("rlhf.group_size", rlhf.group_size, 1, 1024, "completions sampled per prompt"),
      ZF_INT("rlhf.max_new_tokens", rlhf.max_new_tokens, 1, 1 << 16, "completion length cap"),
      ZF_NUM("rlhf.temperature", rlhf.temperature, 0.01, 100, "rollout sampling temperature"),
      ZF_INT("rlhf.overlap", rlhf.overlap, 0, 64,
             "k: rollouts for step n+k run while step n trains (0 = synchronous)"),
      ZF_NUM("rlhf.lr", rlhf.lr, 0, 10, "policy learning rate (constant after the warm-up)"),
      ZF_INT("rlhf.warmup", rlhf.warmup, 0, 1 << 24, "updates of linear learning-rate warm-up"),
      ZF_NUM("rlhf.critic_lr", rlhf.critic_lr, 0, 10, "PPO critic learning rate"),
      ZF_NUM("rlhf.kl_coef", rlhf.kl_coef, -1, 1e3,
             "KL coefficient; -1 = the algorithm's default (grpo 0.04, rloo 0.05, ppo 0.1)"),
      ZF_ENUM("rlhf.kl_estimator", rlhf.kl_estimator, "GRPO's KL estimator in the loss", "k1", "k2",
              "k3"),
      ZF_NUM("rlhf.clip_low", rlhf.clip_low, 0, 10, "ratio clip below 1"),
      ZF_NUM("rlhf.clip_high", rlhf.clip_high, 0, 10, "ratio clip above 1 (DAPO: 0.28)"),
      ZF_ENUM("rlhf.loss_agg", rlhf.loss_agg,
              "loss aggregation: per-sequence mean (GRPO), token mean (DAPO) or a constant "
              "normaliser (Dr. GRPO)",
              "seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"),
      ZF_BOOL("rlhf.scale_by_std", rlhf.scale_by_std, "GRPO advantages divided by the group std"),
      ZF_NUM("rlhf.is_cap", rlhf.is_cap, 0, 1e6,
             "truncated importance-sampling cap for stale rollouts (0 = off)"),
      ZF_NUM("rlhf.gamma", rlhf.gamma, 0, 1, "PPO discount"),
      ZF_NUM("rlhf.lambda", rlhf.lambda, 0, 1, "PPO GAE lambda"),
      ZF_NUM("rlhf.value_clip", rlhf.value_clip, 0, 1e6, "PPO value clip (0 = off)"),
      ZF_NUM("rlhf.reward_clip", rlhf.reward_clip, 0, 1e6, "PPO reward clip (0 = off)"),
      ZF_NUM("rlhf.ema", rlhf.ema, 0, 1, "PPO: EMA decay of the policy weights (0 = off)"),
      ZF_NUM("rlhf.ptx_coef", rlhf.ptx_coef, 0, 1e3, "PPO: weight of the SFT loss mixed in"),
      ZF_INT("rlhf.ppo_epochs", rlhf.ppo_epochs, 1, 64, "passes over each rollout batch"),
      ZF_INT("rlhf.micro_batch", rlhf.micro_batch, 0, 1 << 20,
             "sequences per forward/backward (0 = the whole batch)"),
      ZF_INT("rlhf.sft_steps", rlhf.sft_steps, 0, 1 << 24,
             "SFT warm-up steps for a policy that starts from scratch"),
      ZF_INT("rlhf.sft_batch", rlhf.sft_batch, 1, 1 << 16, "SFT warm-up batch (pairs)"),
      ZF_NUM("rlhf.sft_lr", rlhf.sft_lr, 0, 10, "SFT warm-up learning rate"),
      ZF_NUM("rlhf.sft_noise", rlhf.sft_noise, 0, 1,
             "share of a task's generated warm-up demonstrations that are wrong answers"),
      ZF_INT("rlhf.engine_threads", rlhf.engine_threads, 1, 1024, "rollout engine threads"),
      ZF_ENUM("rlhf.rollout_placement", rlhf.rollout_placement,
              "where the rollout engine runs: in the trainer's process (sharing nothing but a "
              "copy of each version) or in a process of its own (weights over Gloo)",
              "local", "process"),
      ZF_INT("rlhf.engines", rlhf.engines, 1, 256,
             "rollout engines (each rlhf.engine_threads threads; requests round-robin, weights "
             "to all)"),
      ZF_INT("rlhf.engine_restarts", rlhf.engine_restarts, 0, 1000,
             "times a run replaces a rollout engine that died (its batch is generated again, "
             "the same bits); 0: the run stops with its last checkpoint"),
      ZF_INT("rlhf.sync_bucket_mb", rlhf.sync_bucket_mb, 1, 1 << 16,
             "weights per broadcast to an engine in another process (MiB)"),
      ZF_INT("rlhf.eval_prompts", rlhf.eval_prompts, 0, 1 << 20,
             "held-out prompts decoded greedily at the start and the end"),
  };
}

}  // namespace zf::config_detail
