#pragma once
// What an RL run (GRPO, RLOO, PPO in one process) will hold in memory, estimated from its
// configuration and its longest prompt alone, and the check that refuses a run that cannot fit
// before any model is built: an RL run holds up to five copies of the model's sizes at once
// (policy, reference, critic, reward model, rollout engine), so a configuration whose training
// run fits (runtime/train/footprint) can still end in a std::bad_alloc naming no key, or an
// out-of-memory kill, halfway through building its roles.
//
// Notation: P = make_layout(spec).total floats (count_params(spec).total()), C = model.n_embd,
// S = rlhf.prompts_per_step x rlhf.group_size sequences per update, b = min(rlhf.micro_batch, S)
// (0: S) sequences per forward/backward, t = prompt_tokens + rlhf.max_new_tokens - 1 (a packed row:
// prompt + response, the last token predicted, not fed; rl::packed_length), N = S x
// rlhf.max_new_tokens response tokens per update at most. Every figure is in bytes, fp32 (4 each),
// and every role is counted at its peak as if all peaks coincided: the check is an upper bound.
//
// Roles (those present, in this order):
//   "policy": weights P, grads P, optimizer 2P (AdamW exp_avg and exp_avg_sq over the whole
//     layout, rl_run's adamw(layout, 0, total)); activations activation_floats(spec, b, t): the
//     arena transformer::plan lays out for forward_rl + backward_rl on one micro-batch, the
//     [b*t, V] logits included (forward_rl keeps them for the log-prob and entropy rows); other:
//     the updater's per-token arrays (runtime/rl/update): 6 of [b*t] (the log-prob, entropy and
//     gradient rows, the packed ids and targets, the loss's dlogp) and 5 of [N] over the whole
//     batch (rollout, reference, old and new log-probs, advantages), and with rlhf.ema > 0 the
//     EMA of the weights, P (rl_core keeps it beside the policy).
//   "reference" (when the KL coefficient in effect, kl_coef_in_effect, is > 0): weights P (a
//     frozen copy without gradients) and its own scoring activations activation_floats(spec, b,
//     t): score() runs the same forward on a transformer instance of its own, which plans its own
//     arena.
//   "critic" (ppo): the policy's spec plus the value head v_head [C]: weights P + C, grads P + C,
//     optimizer 2 (P + C), activations activation_floats(spec, b, t) (forward_rl plans the whole
//     arena, logits included, even when it skips the LM head), other 3 of [N] (old values,
//     returns, values).
//   "reward model" (has_reward_model): the policy's spec plus the value head, params only:
//     weights P + C, activations activation_floats(spec, b, t).
//   "rollout engine" (runtime/serve/engine_core on the policy's weights, as pipelines/rl_run
//     builds it: engine.* with max_seqs raised to S so a whole batch runs at once, and
//     rlhf.engine_threads threads; engine.block_size is read from cfg, so a caller whose engine
//     overrides it passes a cfg with the engine section it builds from): weights (rlhf.overlap + 2)
//     P: the version served, the one the trainer is publishing, and up to overlap published
//     versions waiting for the rollout worker to reach them; kv: rollout_kv_blocks(cfg) blocks of
//     engine.block_size slots, K and V, of n_layer x kv_dim floats each; other: the paged forward's
//     scratch (runtime/model/model_paged: engine.token_budget rows of activations (static_batch: at
//     least n_positions), max_seqs rows of [V] logits, attention scratch per thread), twice:
//     update_weights builds the new version's runner before it drops the old one. The block pool's
//     bookkeeping (a few ints per block) and the waiting rollout batches (token ids) are left out:
//     below 1% of the KV they describe.
// Not counted, their lengths coming from data rather than the configuration: the SFT warm-up
// (rlhf.sft_steps) and PPO's pretraining mix (rlhf.ptx_coef) plan the policy's arena for their
// own batches (rlhf.sft_batch x the longest SFT pair), which a re-plan replaces rather than adds
// to (the policy holds the larger of the two plans), and the warm-up's AdamW moments are freed
// when it ends.
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/config.hpp"

namespace zf::rl {

struct role_footprint {
  std::string role;  // "policy", "reference", "critic", "reward model", "rollout engine"
  double weights = 0, grads = 0, optimizer = 0, activations = 0, kv = 0, other = 0;  // bytes
  // The keys that size this role with their values, its largest part first, for the message of
  // check_rl_footprint (it has no configuration of its own).
  std::string keys;
  double total() const { return weights + grads + optimizer + activations + kv + other; }
};

struct rl_footprint {
  std::vector<role_footprint> roles;
  double total() const;
  // The role named `role`, or null when the run does not have it.
  const role_footprint* find(const std::string& role) const;
};

// The KL coefficient a run uses: rlhf.kl_coef when >= 0, else the algorithm's default (grpo
// 0.04, rloo 0.05, ppo 0.1). A reference model is built only when it is > 0.
double kl_coef_in_effect(const rlhf_config& r);

// The rollout engine's KV blocks, as engine_core sizes its pool (blocks_for): engine.kv_blocks
// when > 0, else max_seqs full contexts (ceil(model.n_positions / engine.block_size) blocks each)
// with max_seqs = max(engine.max_seqs, S), capped at 1 GiB of K and V (never below one context).
int rollout_kv_blocks(const run_config& cfg);

// cfg must be valid (validate()). prompt_tokens: the longest prompt in tokens (>= 1; the caller
// knows it from its prompt source); has_reward_model: whether a reward model is loaded.
rl_footprint estimate_rl_footprint(const run_config& cfg, int prompt_tokens, bool has_reward_model);

// zf::error when fp.total() is above `available` bytes (machine_memory_bytes(),
// runtime/core/memory.hpp), naming the bytes needed and available and every role, largest first,
// with its figure and the keys that make it large.
void check_rl_footprint(const rl_footprint& fp, std::uint64_t available);

}  // namespace zf::rl
