#pragma once
// Supervised fine-tuning on prompt/response pairs, the loss on the response tokens only (the
// prompt's targets are -1): DeepSpeed-Chat's step 1, and the warm-up that gives an RL policy
// trained from scratch something to sample. A plain loop on one model and one AdamW (warm-up +
// cosine over the steps); batches are drawn with replacement from the pairs by a seeded rng.
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"

namespace zf::rl {

struct sft_pair {
  std::vector<int> prompt;    // >= 1 token
  std::vector<int> response;  // >= 1 token, the end-of-text token last when it should stop
};

struct sft_options {
  int steps = 200, batch = 32;
  double lr = 3e-3;
  uint64_t seed = 0;
  optimizer_config opt;  // betas, weight decay, clipping (lr is the one above)
};

// Returns the loss of every step; progress (may be empty) sees (step, loss).
std::vector<float> sft_train(transformer& m, const std::vector<sft_pair>& pairs,
                             const sft_options& o,
                             const std::function<void(int, float)>& progress = nullptr);

// The mean response-token loss of pairs under m (no update), in batches of `batch`.
double sft_loss(transformer& m, const std::vector<sft_pair>& pairs, int batch);

}  // namespace zf::rl
