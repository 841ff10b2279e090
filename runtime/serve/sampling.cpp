#include "runtime/serve/sampling.hpp"

#include "kernels/softmax.hpp"

#include <algorithm>
#include <cmath>

namespace zf {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

double log_sum_exp(const float* x, int n) { return kernels::log_sum_exp(x, n); }

void top_k_ids(const float* x, int n, int k, std::vector<int>& out) {
  out.clear();
  k = std::min(k, n);
  if (k <= 0) return;
  // better(a, b): a ranks before b. As the heap's "less" it keeps the worst kept id in front,
  // the one a newcomer has to beat.
  auto better = [x](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  for (int i = 0; i < n; ++i) {
    if (static_cast<int>(out.size()) < k) {
      out.push_back(i);
      std::push_heap(out.begin(), out.end(), better);
    } else if (x[i] > x[out.front()]) {  // a tie loses: i is the higher id
      std::pop_heap(out.begin(), out.end(), better);
      out.back() = i;
      std::push_heap(out.begin(), out.end(), better);
    }
  }
  std::sort_heap(out.begin(), out.end(), better);  // best first
}

logit_penalties::logit_penalties(const sampling_params& p, std::span<const int> prompt,
                                 int max_generated)
    : active_(p.penalized()),
      counting_(p.presence_penalty != 0 || p.frequency_penalty != 0 || p.repetition_penalty != 1),
      presence_(p.presence_penalty),
      frequency_(p.frequency_penalty),
      repetition_(p.repetition_penalty),
      bias_(p.logit_bias) {
  if (repetition_ != 1) {
    prompt_.assign(prompt.begin(), prompt.end());
    std::sort(prompt_.begin(), prompt_.end());
    prompt_.erase(std::unique(prompt_.begin(), prompt_.end()), prompt_.end());
    prompt_.shrink_to_fit();
  }
  if (counting_) generated_.reserve(static_cast<std::size_t>(std::max(max_generated, 0)));
}

void logit_penalties::accept(int token) {
  if (!counting_) return;
  auto it = std::lower_bound(generated_.begin(), generated_.end(), token,
                             [](const seen& s, int t) { return s.token < t; });
  if (it != generated_.end() && it->token == token) {
    ++it->count;
    return;
  }
  // A new id: one insertion into a vector reserved for every token the choice may generate.
  const bool in_prompt = std::binary_search(prompt_.begin(), prompt_.end(), token);
  generated_.insert(it, seen{token, 1, in_prompt});
}

int logit_penalties::count(int token) const {
  auto it = std::lower_bound(generated_.begin(), generated_.end(), token,
                             [](const seen& s, int t) { return s.token < t; });
  return it != generated_.end() && it->token == token ? it->count : 0;
}

void logit_penalties::apply(float* logits, int vocab) const {
  if (!active_) return;
  auto in_vocab = [vocab](int t) { return t >= 0 && t < vocab; };
  for (const auto& [t, b] : bias_)
    if (in_vocab(t)) logits[t] += b;
  if (repetition_ != 1) {  // each seen id once: prompt ids here, generated ones below
    auto penalize = [this](float& x) { x = x > 0 ? x / repetition_ : x * repetition_; };
    for (int t : prompt_)
      if (in_vocab(t)) penalize(logits[t]);
    for (const seen& s : generated_)
      if (!s.in_prompt && in_vocab(s.token)) penalize(logits[s.token]);
  }
  if (presence_ != 0 || frequency_ != 0)
    for (const seen& s : generated_)  // count >= 1 for every entry
      if (in_vocab(s.token)) logits[s.token] -= frequency_ * s.count + presence_;
}

int sampler::sample(const float* logits, int vocab) {
  if (p_.temperature <= 0.0f || p_.top_k == 1) return argmax(logits, vocab);
  cand_.resize(vocab);
  for (int i = 0; i < vocab; ++i) cand_[i] = {logits[i] / p_.temperature, i};
  auto desc = [](const auto& a, const auto& b) { return a.first > b.first; };
  int n = vocab;
  if (p_.top_k > 0 && p_.top_k < vocab) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), desc);
    n = p_.top_k;
  } else if (p_.top_p < 1.0f) {
    std::sort(cand_.begin(), cand_.end(), desc);
  }
  const float mx = n == vocab && p_.top_p >= 1.0f
                       ? std::max_element(cand_.begin(), cand_.end(),
                                          [&](auto& a, auto& b) { return a.first < b.first; })
                             ->first
                       : cand_[0].first;
  double total = 0;
  for (int i = 0; i < n; ++i) total += (cand_[i].first = std::exp(cand_[i].first - mx));
  if (p_.top_p < 1.0f) {  // smallest prefix (sorted) whose mass reaches top_p
    double acc = 0;
    int keep = 0;
    while (keep < n) {
      acc += cand_[keep++].first / total;
      if (acc >= p_.top_p) break;
    }
    n = keep;
    total = 0;
    for (int i = 0; i < n; ++i) total += cand_[i].first;
  }
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (int i = 0; i < n; ++i) {
    r -= cand_[i].first;
    if (r <= 0) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace zf
