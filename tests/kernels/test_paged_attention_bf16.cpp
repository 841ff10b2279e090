// Paged attention over a bf16 KV pool (paged_kv::k16, v16; issue 16): both paths (direct rows and
// the gather path's GEMMs), grouped-query heads and odd head sizes give the bits of the fp32 kernel
// over the same K/V rounded to bf16 (widening is exact and the operations are the same), and stay
// within bf16's tolerance of fp32 attention over the unrounded K/V.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/paged_attention.hpp"

using namespace zf::kernels;
using sz = std::size_t;

TEST_CASE("paged attention bf16 KV: equals fp32 attention over bf16-rounded K/V, both paths") {
  struct shape {
    int n_head, n_kv_head, head_dim, start, tq;
  };
  for (const shape sh : {shape{4, 4, 16, 0, 1}, shape{4, 2, 16, 9, 3}, shape{6, 2, 13, 5, 4},
                         shape{4, 1, 24, 3, 11}, shape{2, 2, 8, 0, 30}}) {
    for (bool invariant : {false, true}) {
      CAPTURE(sh.n_head);
      CAPTURE(sh.head_dim);
      CAPTURE(sh.tq);
      CAPTURE(invariant);
      const batch_invariant_scope inv(invariant);
      const int bs = 4, kvd = sh.n_kv_head * sh.head_dim, ctx = sh.start + sh.tq;
      const int n_blocks = (ctx + bs - 1) / bs + 3;
      std::mt19937 g(sh.head_dim * 31 + sh.tq);
      std::normal_distribution<float> d(0.0f, 1.0f);
      std::vector<float> kf(sz(n_blocks) * bs * kvd), vf(kf.size()), kr(kf.size()), vr(kf.size());
      std::vector<std::uint16_t> k16(kf.size()), v16(kf.size());
      for (sz i = 0; i < kf.size(); ++i) {
        kf[i] = d(g);
        vf[i] = d(g);
        k16[i] = f32_to_bf16(kf[i]);
        v16[i] = f32_to_bf16(vf[i]);
        kr[i] = bf16_to_f32(k16[i]);
        vr[i] = bf16_to_f32(v16[i]);
      }
      std::vector<int> table;
      for (int b = 0; b < n_blocks; ++b) table.push_back((b * 5 + 2) % n_blocks);
      const int q_dim = sh.n_head * sh.head_dim;
      std::vector<float> q(sz(sh.tq) * q_dim);
      for (auto& x : q) x = d(g);
      const paged_shape s{.tq = sh.tq,
                          .start = sh.start,
                          .n_head = sh.n_head,
                          .n_kv_head = sh.n_kv_head,
                          .head_dim = sh.head_dim,
                          .ldq = q_dim,
                          .ldo = q_dim};
      std::vector<float> scratch(sz(paged_attention_scratch(s)));
      auto run = [&](const paged_kv& kv) {
        std::vector<float> out(sz(sh.tq) * q_dim);
        paged_attention(s, q.data(), kv, out.data(), scratch.data());
        return out;
      };
      const auto bf = run({.k16 = k16.data(),
                           .v16 = v16.data(),
                           .blocks = table.data(),
                           .block_size = bs,
                           .kv_dim = kvd});
      const auto rounded = run({.k = kr.data(),
                                .v = vr.data(),
                                .blocks = table.data(),
                                .block_size = bs,
                                .kv_dim = kvd});
      const auto exact = run({.k = kf.data(),
                              .v = vf.data(),
                              .blocks = table.data(),
                              .block_size = bs,
                              .kv_dim = kvd});
      CHECK(bf == rounded);
      double worst = 0;
      for (sz i = 0; i < bf.size(); ++i)
        worst = std::max(worst, double(std::abs(bf[i] - exact[i])));
      CHECK(worst < 2e-2);  // bf16's 2^-9 relative per element, outputs O(1)
    }
  }
}
