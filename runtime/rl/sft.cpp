#include "runtime/rl/sft.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "runtime/core/error.hpp"
#include "runtime/rl/experience.hpp"
#include "runtime/rl/model_step.hpp"

namespace zf::rl {
namespace {

int longest(const std::vector<sft_pair>& pairs) {
  std::size_t t = 1;
  for (auto& p : pairs) {
    if (p.prompt.empty() || p.response.empty())
      fail("sft: a pair with an empty prompt or response");
    t = std::max(t, p.prompt.size() + p.response.size() - 1);
  }
  return static_cast<int>(t);
}

void pack_pairs(const std::vector<const sft_pair*>& chosen, int t, packed_batch& out) {
  std::vector<rollout_seq> seqs(chosen.size());
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    seqs[i].prompt = chosen[i]->prompt;
    seqs[i].response = chosen[i]->response;
  }
  pack(seqs, t, out);
}

}  // namespace

std::vector<float> sft_train(transformer& m, const std::vector<sft_pair>& pairs,
                             const sft_options& o,
                             const std::function<void(int, float)>& progress) {
  if (pairs.empty()) fail("sft: no pairs to train on");
  const int T = longest(pairs);
  if (T > m.spec().max_positions)
    fail("sft: a pair of {} tokens exceeds the model's context of {}", T + 1,
         m.spec().max_positions);
  scheduled_adamw opt(m, o.opt, o.lr, o.steps);
  std::mt19937_64 rng(o.seed);
  std::vector<const sft_pair*> chosen(o.batch);
  packed_batch pb;
  std::vector<float> losses;
  for (int s = 0; s < o.steps; ++s) {
    for (auto& c : chosen) c = &pairs[rng() % pairs.size()];
    pack_pairs(chosen, T, pb);
    m.zero_grad();
    const float loss = m.forward_backward(pb.ids.data(), pb.targets.data(), pb.b, pb.t);
    opt.step(s);
    losses.push_back(loss);
    if (progress) progress(s, loss);
  }
  return losses;
}

double sft_loss(transformer& m, const std::vector<sft_pair>& pairs, int batch) {
  const int T = longest(pairs);
  packed_batch pb;
  double sum = 0;
  int64_t n = 0;
  for (std::size_t b0 = 0; b0 < pairs.size(); b0 += batch) {
    std::vector<const sft_pair*> chosen;
    for (std::size_t i = b0; i < std::min(pairs.size(), b0 + batch); ++i)
      chosen.push_back(&pairs[i]);
    pack_pairs(chosen, T, pb);
    const float loss = m.forward(pb.ids.data(), pb.targets.data(), pb.b, pb.t);
    sum += double(loss) * pb.tokens();
    n += pb.tokens();
  }
  return n ? sum / n : 0;
}

}  // namespace zf::rl
