#include "runtime/rl/reward_model.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "runtime/core/error.hpp"
#include "runtime/rl/model_step.hpp"

namespace zf::rl {
namespace {

// Sequences as whole rows (no shift: the value at position P + R - 1 reads the full sequence):
// ids [b, t], last[i] the row position of sequence i's last token.
struct value_rows {
  int b = 0, t = 0;
  std::vector<int> ids, last;
};

void pack_whole(const std::vector<std::pair<const std::vector<int>*, const std::vector<int>*>>& s,
                int t, value_rows& out) {
  out.b = static_cast<int>(s.size());
  out.t = t;
  out.ids.assign(std::size_t(out.b) * t, 0);
  out.last.resize(out.b);
  for (int i = 0; i < out.b; ++i) {
    const auto& p = *s[i].first;
    const auto& r = *s[i].second;
    const int n = static_cast<int>(p.size() + r.size());
    if (p.empty() || r.empty()) fail("reward model: a sequence with an empty prompt or response");
    if (n > t) fail("reward model: a sequence of {} tokens exceeds rows of {}", n, t);
    int* row = out.ids.data() + std::size_t(i) * t;
    std::copy(p.begin(), p.end(), row);
    std::copy(r.begin(), r.end(), row + p.size());
    out.last[i] = n - 1;
  }
}

int longest(const std::vector<preference_ids>& pairs) {
  std::size_t t = 1;
  for (auto& p : pairs)
    t = std::max({t, p.prompt.size() + p.chosen.size(), p.prompt.size() + p.rejected.size()});
  return static_cast<int>(t);
}

void check_head(const transformer& rm) {
  if (!rm.spec().value_head) fail("reward model: the model has no value head (model.value_head)");
}

// Chosen rows first, then rejected: values [2b, t] -> margins r_c - r_r.
void pack_pairs(const std::vector<const preference_ids*>& pairs, int t, value_rows& rows) {
  std::vector<std::pair<const std::vector<int>*, const std::vector<int>*>> s;
  for (auto* p : pairs) s.push_back({&p->prompt, &p->chosen});
  for (auto* p : pairs) s.push_back({&p->prompt, &p->rejected});
  pack_whole(s, t, rows);
}

}  // namespace

std::vector<float> train_reward_model(transformer& rm, const std::vector<preference_ids>& pairs,
                                      const rm_options& o) {
  check_head(rm);
  if (pairs.empty()) fail("reward model: no preference pairs");
  const int T = longest(pairs);
  if (T > rm.spec().max_positions)
    fail("reward model: a pair of {} tokens exceeds the model's context of {}", T,
         rm.spec().max_positions);
  scheduled_adamw opt(rm, o.opt, o.lr, o.steps);
  std::mt19937_64 rng(o.seed);
  std::vector<const preference_ids*> chosen(o.batch);
  value_rows rows;
  std::vector<float> values, dvalue, losses;
  for (int s = 0; s < o.steps; ++s) {
    for (auto& c : chosen) c = &pairs[rng() % pairs.size()];
    pack_pairs(chosen, T, rows);
    const std::size_t n = std::size_t(rows.b) * T;
    values.resize(n);
    dvalue.assign(n, 0.0f);
    rm.zero_grad();
    rm.forward_rl(rows.ids.data(), nullptr, rows.b, T, nullptr, nullptr, values.data());
    // loss = mean_i softplus(-(r_c - r_r)); d/dr_c = -sigmoid(-(r_c - r_r)) / B, d/dr_r = -that.
    const int B = o.batch;
    double loss = 0;
    for (int i = 0; i < B; ++i) {
      const std::size_t ic = std::size_t(i) * T + rows.last[i];
      const std::size_t ir = std::size_t(B + i) * T + rows.last[B + i];
      const double d = double(values[ic]) - values[ir];
      loss += d > 0 ? std::log1p(std::exp(-d)) : -d + std::log1p(std::exp(d));
      const double g = 1.0 / (1.0 + std::exp(d)) / B;  // sigmoid(-d) / B
      const double sum = double(values[ic]) + values[ir];
      loss += o.center * sum * sum;
      const double gc = 2 * o.center * sum / B;  // d/dr of center (r_c + r_r)^2 / B
      dvalue[ic] = static_cast<float>(-g + gc);
      dvalue[ir] = static_cast<float>(g + gc);
    }
    rm.backward_rl(rows.ids.data(), nullptr, nullptr, dvalue.data());
    opt.step(s);
    losses.push_back(static_cast<float>(loss / B));
  }
  return losses;
}

double pairwise_accuracy(transformer& rm, const std::vector<preference_ids>& pairs, int batch) {
  check_head(rm);
  if (pairs.empty()) return 0;
  const int T = longest(pairs);
  value_rows rows;
  std::vector<float> values;
  int right = 0;
  for (std::size_t b0 = 0; b0 < pairs.size(); b0 += batch) {
    std::vector<const preference_ids*> chunk;
    for (std::size_t i = b0; i < std::min(pairs.size(), b0 + batch); ++i)
      chunk.push_back(&pairs[i]);
    pack_pairs(chunk, T, rows);
    values.resize(std::size_t(rows.b) * T);
    rm.forward_rl(rows.ids.data(), nullptr, rows.b, T, nullptr, nullptr, values.data());
    const int B = static_cast<int>(chunk.size());
    for (int i = 0; i < B; ++i)
      right += values[std::size_t(i) * T + rows.last[i]] >
               values[std::size_t(B + i) * T + rows.last[B + i]];
  }
  return double(right) / pairs.size();
}

void reward_scores(transformer& rm, std::span<const rollout_seq> seqs, int batch,
                   std::vector<float>& out) {
  check_head(rm);
  out.resize(seqs.size());
  std::size_t t = 1;
  for (auto& s : seqs) t = std::max(t, s.prompt.size() + s.response.size());
  const int T = static_cast<int>(t);
  value_rows rows;
  std::vector<float> values;
  for (std::size_t b0 = 0; b0 < seqs.size(); b0 += batch) {
    std::vector<std::pair<const std::vector<int>*, const std::vector<int>*>> chunk;
    for (std::size_t i = b0; i < std::min(seqs.size(), b0 + batch); ++i)
      chunk.push_back({&seqs[i].prompt, &seqs[i].response});
    pack_whole(chunk, T, rows);
    values.resize(std::size_t(rows.b) * T);
    rm.forward_rl(rows.ids.data(), nullptr, rows.b, T, nullptr, nullptr, values.data());
    for (int i = 0; i < rows.b; ++i) out[b0 + i] = values[std::size_t(i) * T + rows.last[i]];
  }
}

}  // namespace zf::rl
