#pragma once
// A reward model as DeepSpeed-Chat's step 2 trains it: the language model's body with a scalar
// value head (model_spec.value_head), the reward of prompt + response being the value at the
// response's last token, trained on preference pairs with the pairwise loss
// -log sigmoid(r_chosen - r_rejected), plus a small centering term (rm_options::center). Also the
// scoring the RL loop uses, and pairwise accuracy (the fraction of pairs with r_chosen >
// r_rejected) for held-out evaluation.
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"
#include "runtime/rl/experience.hpp"

namespace zf::rl {

struct preference_ids {
  std::vector<int> prompt, chosen, rejected;  // responses end with the end-of-text token
};

struct rm_options {
  int steps = 300, batch = 32;
  double lr = 1e-3;
  // Coefficient of mean((r_chosen + r_rejected)^2) added to the loss (TRL's
  // center_rewards_coefficient): the pairwise loss fixes only differences, so without it the
  // scores drift far from 0 and a PPO reward clip then flattens them all.
  double center = 0.01;
  uint64_t seed = 0;
  optimizer_config opt;  // betas, weight decay, clipping (lr is the one above)
};

// Trains rm (which must have a value head) in place; returns each step's mean pairwise loss.
std::vector<float> train_reward_model(transformer& rm, const std::vector<preference_ids>& pairs,
                                      const rm_options& o);
// Fraction of pairs the model ranks right (ties count as wrong), in batches of `batch` pairs.
double pairwise_accuracy(transformer& rm, const std::vector<preference_ids>& pairs, int batch);
// out[i]: the reward of seqs[i] (prompt + response), in forward batches of `batch` sequences.
void reward_scores(transformer& rm, std::span<const rollout_seq> seqs, int batch,
                   std::vector<float>& out);

}  // namespace zf::rl
