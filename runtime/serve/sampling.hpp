#pragma once
// Next-token sampling from logits: greedy, temperature, top-k, top-p (nucleus), seeded; and the
// OpenAI/vLLM penalties and logit_bias that reshape a logits row before sampling.
// The sampler owns its scratch (sized to the vocabulary once), so a decode loop allocates nothing.
#include <cstdint>
#include <random>
#include <span>
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
  // Applied to the logits before temperature, top-k, top-p and the greedy argmax, in vLLM's
  // order: logit_bias, then repetition_penalty, then frequency and presence (logit_penalties).
  // OpenAI: logit[t] -= frequency_penalty * count[t] + presence_penalty * (count[t] > 0), count
  // over the tokens this choice generated so far. Both in [-2, 2]; 0: off.
  float presence_penalty = 0;
  float frequency_penalty = 0;
  // vLLM: > 0; 1: off. Every token seen in the prompt or generated so far (once, however often
  // seen): logit > 0 ? logit / p : logit * p.
  float repetition_penalty = 1;
  // OpenAI: (token id, bias in [-100, 100]) added to that token's logit; at most
  // serve::max_logit_bias entries; entries for the same id add up.
  std::vector<std::pair<int, float>> logit_bias;
  // Whether any of the four above changes a logit (logit_penalties is a no-op otherwise).
  bool penalized() const {
    return presence_penalty != 0 || frequency_penalty != 0 || repetition_penalty != 1 ||
           !logit_bias.empty();
  }
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

// One choice's state for sampling_params' penalties and logit_bias. Off (no penalty set): holds
// nothing, accept() returns at once and the caller samples the model's row untouched. On: the
// distinct generated ids with their counts (sorted, reserved for max_generated at construction,
// so accept() does not allocate) and, for repetition_penalty, the distinct prompt ids; apply()
// then costs O(distinct prompt + distinct generated + logit_bias) per token, not O(vocab).
class logit_penalties {
 public:
  logit_penalties() = default;
  // prompt: the choice's prompt ids; max_generated: tokens it generates at most.
  logit_penalties(const sampling_params& p, std::span<const int> prompt, int max_generated);
  bool active() const { return active_; }
  // Records a generated token (after it was sampled).
  void accept(int token);
  // logits: [vocab], changed in place (the caller's copy: see engine_core). Ids outside
  // [0, vocab) are skipped (requests are validated before they get here).
  void apply(float* logits, int vocab) const;
  // How often token was generated so far (0 when off or when nothing is counted).
  int count(int token) const;

 private:
  struct seen {
    int token;
    int count;
    bool in_prompt;  // repetition_penalty already applies to it through prompt_
  };
  bool active_ = false, counting_ = false;
  float presence_ = 0, frequency_ = 0, repetition_ = 1;
  std::vector<std::pair<int, float>> bias_;
  std::vector<int> prompt_;      // distinct prompt ids, sorted; only with repetition_ != 1
  std::vector<seen> generated_;  // distinct generated ids, sorted by token
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
