#include "runtime/rl/experience.hpp"

#include <algorithm>

#include "runtime/core/error.hpp"

namespace zf::rl {

int packed_batch::tokens() const {
  int n = 0;
  for (int l : len) n += l;
  return n;
}

int packed_length(std::span<const rollout_seq> seqs) {
  std::size_t t = 1;
  for (auto& s : seqs) t = std::max(t, s.prompt.size() + s.response.size() - 1);
  return static_cast<int>(t);
}

void pack(std::span<const rollout_seq> seqs, int t, packed_batch& out) {
  const int b = static_cast<int>(seqs.size());
  out.b = b;
  out.t = t;
  out.ids.assign(std::size_t(b) * t, 0);
  out.targets.assign(std::size_t(b) * t, -1);
  out.first.resize(b);
  out.len.resize(b);
  for (int i = 0; i < b; ++i) {
    const rollout_seq& s = seqs[i];
    const int P = static_cast<int>(s.prompt.size()), R = static_cast<int>(s.response.size());
    if (P < 1) fail("rollout {}: empty prompt", i);
    if (P + R - 1 > t) fail("rollout {}: {} tokens do not fit rows of {}", i, P + R - 1, t);
    int* ids = out.ids.data() + std::size_t(i) * t;
    int* tg = out.targets.data() + std::size_t(i) * t;
    std::copy(s.prompt.begin(), s.prompt.end(), ids);
    if (R > 0) std::copy(s.response.begin(), s.response.end() - 1, ids + P);
    for (int j = 0; j < R; ++j) tg[P - 1 + j] = s.response[j];
    out.first[i] = P - 1;
    out.len[i] = R;
  }
}

void gather_response(const packed_batch& p, const float* rows, float* flat) {
  std::size_t k = 0;
  for (int i = 0; i < p.b; ++i)
    for (int j = 0; j < p.len[i]; ++j) flat[k++] = rows[std::size_t(i) * p.t + p.first[i] + j];
}

void scatter_response(const packed_batch& p, const float* flat, float* rows) {
  std::fill(rows, rows + std::size_t(p.b) * p.t, 0.0f);
  std::size_t k = 0;
  for (int i = 0; i < p.b; ++i)
    for (int j = 0; j < p.len[i]; ++j) rows[std::size_t(i) * p.t + p.first[i] + j] = flat[k++];
}

}  // namespace zf::rl
