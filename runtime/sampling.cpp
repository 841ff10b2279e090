#include "runtime/sampling.hpp"

#include <algorithm>
#include <cmath>

namespace zf {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
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
