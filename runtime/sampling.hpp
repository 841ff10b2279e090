#pragma once
// Next-token sampling from logits: greedy, temperature, top-k, top-p (nucleus), seeded.
// The sampler owns its scratch (sized to the vocabulary once), so a decode loop allocates nothing.
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace zf {

struct sampling_params {
  float temperature = 1.0f;  // 0: greedy
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
};

class sampler {
 public:
  explicit sampler(const sampling_params& p) : p_(p), rng_(p.seed) {}
  // logits: [vocab]. Returns the chosen id.
  int sample(const float* logits, int vocab);

 private:
  sampling_params p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> cand_;
};

int argmax(const float* x, int n);

}  // namespace zf
