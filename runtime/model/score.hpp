#pragma once
// Score mode in batches: per-token log-probabilities of token sequences under the model's
// training forward (runtime/model/model, transformer::score), as reward models, reference policies
// and evaluation need them. Sequences are packed `batch` at a time into one [batch, T] forward,
// right-padded (causal attention: padding after a sequence never reaches its rows), T fixed per
// scorer so the activations are planned once.
#include <cstdint>
#include <vector>

#include "runtime/model/model.hpp"

namespace zf {

struct score_item {
  std::vector<int> ids;  // the whole sequence (prompt + completion)
  int first = 1;         // score positions [first, ids.size()): >= 1 (position 0 has no context)
};

struct score_result {
  std::vector<float> logprobs;  // [ids.size() - first]: log p(ids[i] | ids[0..i))
  double sum = 0;               // their sum, accumulated in double
};

class scorer {
 public:
  // model: the weights to score with (not owned; used from this thread only). max_len: the
  // longest sequence to accept (<= the model's context); batch: sequences per forward.
  scorer(transformer& model, int max_len, int batch);
  // One result per item, in order. zf::error names the item for an empty, too long or out-of-
  // vocabulary sequence, or a `first` outside [1, size).
  std::vector<score_result> score(const std::vector<score_item>& items);

 private:
  transformer& model_;
  int T_, B_;
  std::vector<int> ids_, targets_;  // [B, T]
  std::vector<float> lp_;           // [B, T]
};

// Perplexity of one long token stream with windows of `window` tokens moved by `stride`: each
// window scores only the tokens it adds (the first window all but its first; with stride ==
// window each window's first token is skipped, having no context), every token scored at most
// once with up to window - 1 tokens of context, as Hugging Face's perplexity guide does.
struct ppl_result {
  double nll_sum = 0;
  int64_t tokens = 0;
  double ppl() const;
};
ppl_result perplexity(transformer& model, const std::vector<int>& ids, int window, int stride);

}  // namespace zf
