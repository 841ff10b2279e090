#include "runtime/model/score.hpp"

#include <algorithm>
#include <cmath>

#include "runtime/core/error.hpp"

namespace zf {

scorer::scorer(transformer& model, int max_len, int batch) : model_(model), T_(max_len), B_(batch) {
  if (max_len < 2 || max_len > model.spec().max_positions)
    fail("score: sequence length {} outside 2..{} (the model's context)", max_len,
         model.spec().max_positions);
  if (batch < 1) fail("score: batch must be >= 1, got {}", batch);
  ids_.resize(std::size_t(B_) * T_);
  targets_.resize(ids_.size());
  lp_.resize(ids_.size());
}

std::vector<score_result> scorer::score(const std::vector<score_item>& items) {
  const int V = model_.spec().vocab_size;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const int n = static_cast<int>(it.ids.size());
    if (n < 2) fail("score: item {} has {} tokens; at least 2 are needed", i + 1, n);
    if (n > T_) fail("score: item {} has {} tokens, more than the limit of {}", i + 1, n, T_);
    if (it.first < 1 || it.first >= n)
      fail("score: item {}: the scored part starts at token {}, outside 1..{}", i + 1, it.first,
           n - 1);
    for (int id : it.ids)
      if (id < 0 || id >= V) fail("score: item {}: token id {} outside 0..{}", i + 1, id, V - 1);
  }
  std::vector<score_result> out(items.size());
  for (std::size_t b0 = 0; b0 < items.size(); b0 += std::size_t(B_)) {
    const std::size_t nb = std::min(items.size() - b0, std::size_t(B_));
    std::fill(ids_.begin(), ids_.end(), 0);
    std::fill(targets_.begin(), targets_.end(), -1);
    for (std::size_t r = 0; r < nb; ++r) {
      const auto& it = items[b0 + r];
      int* row = ids_.data() + r * T_;
      int* tg = targets_.data() + r * T_;
      std::copy(it.ids.begin(), it.ids.end(), row);
      // target of position p is token p + 1; only the scored part counts
      for (std::size_t p = std::size_t(it.first) - 1; p + 1 < it.ids.size(); ++p)
        tg[p] = it.ids[p + 1];
    }
    // Always the full [B, T]: the same plan every call (rows past nb are all padding).
    model_.score(ids_.data(), targets_.data(), B_, T_, lp_.data());
    for (std::size_t r = 0; r < nb; ++r) {
      const auto& it = items[b0 + r];
      score_result& res = out[b0 + r];
      const float* lp = lp_.data() + r * T_;
      for (std::size_t p = std::size_t(it.first) - 1; p + 1 < it.ids.size(); ++p) {
        res.logprobs.push_back(lp[p]);
        res.sum += lp[p];
      }
    }
  }
  return out;
}

double ppl_result::ppl() const {
  return tokens ? std::exp(nll_sum / double(tokens)) : 0.0;
}

ppl_result perplexity(transformer& model, const std::vector<int>& ids, int window, int stride) {
  if (stride < 1 || stride > window) fail("ppl: stride {} outside 1..window ({})", stride, window);
  scorer sc(model, window, 1);
  ppl_result r;
  const std::size_t n = ids.size();
  if (n < 2) fail("ppl: the text has {} tokens; at least 2 are needed", n);
  std::size_t scored_to = 1;  // tokens [1, scored_to) are done
  for (std::size_t begin = 0; scored_to < n; begin += std::size_t(stride)) {
    const std::size_t end = std::min(n, begin + std::size_t(window));
    score_item it;
    it.ids.assign(ids.begin() + long(begin), ids.begin() + long(end));
    // With stride == window the windows do not overlap and each one's first token has no
    // context inside it: it is skipped (not counted), as in Hugging Face's guide.
    it.first = static_cast<int>(std::max<std::size_t>(1, scored_to - begin));
    auto res = sc.score({it});
    r.nll_sum -= res[0].sum;
    r.tokens += static_cast<int64_t>(res[0].logprobs.size());
    scored_to = end;
  }
  return r;
}

}  // namespace zf
