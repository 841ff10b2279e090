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
  // Not used for sampling: -1 reports nothing; k >= 0 asks the engine for each generated
  // token's log-probability and the k most likely alternatives (vLLM keeps `logprobs` in its
  // SamplingParams too, so every choice of a request carries it).
  int logprobs = -1;
};

class sampler {
 public:
  explicit sampler(const sampling_params& p) : p_(p), rng_(p.seed) {}
  // logits: [vocab]. Returns the chosen id.
  int sample(const float* logits, int vocab);
  const sampling_params& params() const { return p_; }

 private:
  sampling_params p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> cand_;
};

int argmax(const float* x, int n);

// log(sum_i exp(x[i])) over x[0..n), stable: the max is subtracted before exp and the sum is
// kept in double. x[t] - log_sum_exp(x, n) is log_softmax(x)[t].
double log_sum_exp(const float* x, int n);
// The ids of the k largest of x[0..n) into out, largest first (ties: lower id first, so
// out[0] == argmax(x, n)); out gets min(k, n) entries. One pass with a k-entry heap in out:
// O(n log k), no n-sized scratch, and no allocation once out has capacity k.
void top_k_ids(const float* x, int n, int k, std::vector<int>& out);

}  // namespace zf
