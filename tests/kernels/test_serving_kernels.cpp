// Serving kernels against double-precision references: paged attention (both paths, GQA,
// scrambled block tables), RoPE, RMSNorm, SwiGLU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "grad_check.hpp"
#include "harness.hpp"
#include "kernels/activation.hpp"
#include "kernels/norm.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/rope.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;
namespace ref = zf::test::ref;

namespace {

// The shared fixture (harness.hpp): scrambled block table, reference on the dense K/V.
void check_paged(int tq, int start, int nh, int nkv, int hd, int bs) {
  const auto r = zf::test::run_paged(tq, start, nh, nkv, hd, bs);
  CHECK(all_close(r.out.data(), r.want.data(), r.out.size(), 1e-5, 1e-6));
}

}  // namespace

TEST_CASE("paged attention decode rows equal dense causal attention with GQA") {
  check_paged(1, 0, 4, 2, 16, 4);
  check_paged(1, 37, 4, 2, 16, 4);
  check_paged(3, 20, 8, 2, 64, 16);
  check_paged(1, 50, 4, 4, 12, 8);  // head_dim not a multiple of 8
}

TEST_CASE("paged attention chunks equal dense causal attention with GQA") {
  check_paged(9, 0, 4, 2, 16, 4);
  check_paged(33, 17, 4, 1, 16, 8);
  check_paged(150, 70, 2, 2, 32, 16);
}

TEST_CASE("rope rotates head halves by position times inverse frequency") {
  const int hd = 8, nh = 2, n = 3;
  std::vector<float> cs(10 * hd / 2), sn(cs.size());
  std::vector<double> inv_freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / hd);
  rope_tables(10, hd, inv_freq.data(), cs.data(), sn.data());
  auto x = randn(static_cast<std::size_t>(n) * nh * hd, 4);
  auto y = x;
  const int pos[3] = {0, 5, 9};
  rope_forward(y.data(), nh * hd, n, pos, nh, hd, cs.data(), sn.data());
  std::vector<double> want(x.size());
  ref::rope(x.data(), nh * hd, n, pos, nh, hd, inv_freq.data(), 1, want.data());
  for (std::size_t e = 0; e < y.size(); ++e) CHECK(y[e] == doctest::Approx(want[e]).epsilon(1e-5));
  // position 0 is the identity
  for (int e = 0; e < nh * hd; ++e) CHECK(y[e] == x[e]);
}

TEST_CASE("rmsnorm and swiglu equal their closed forms") {
  const int n = 3, c = 21;
  auto x = randn(static_cast<std::size_t>(n) * c, 5), g = randn(c, 6);
  std::vector<float> y(x.size());
  rmsnorm_forward(x.data(), g.data(), y.data(), n, c, 1e-5f);
  std::vector<double> wy(x.size()), wr(n), wdx(x.size()), wdg(c);
  const std::vector<float> dy(x.size());
  ref::rmsnorm(x.data(), g.data(), dy.data(), n, c, 1e-5, wy.data(), wr.data(), wdx.data(),
               wdg.data());
  for (std::size_t e = 0; e < y.size(); ++e) CHECK(y[e] == doctest::Approx(wy[e]).epsilon(1e-5));
  const int m = 13;
  auto gu = randn(static_cast<std::size_t>(n) * 2 * m, 7, 3.0f);
  std::vector<float> o(static_cast<std::size_t>(n) * m);
  swiglu_forward(gu.data(), o.data(), n, m);
  std::vector<double> wo(o.size());
  ref::swiglu_forward(gu.data(), n, m, wo.data());
  for (std::size_t e = 0; e < o.size(); ++e) CHECK(o[e] == doctest::Approx(wo[e]).epsilon(1e-5));
}

TEST_CASE("paged attention by kv-head groups gives the bits of all heads at once") {
  // 8 query heads over 2 kv heads (groups of 4); a decode row, 3 rows, a gathered chunk.
  const int nh = 8, nkv = 2, hd = 16, bs = 4, Q = nh * hd, KV = nkv * hd;
  for (const auto [tq, start] : {std::pair{1, 29}, std::pair{3, 12}, std::pair{9, 7}}) {
    const int ctx = start + tq, nblocks = (ctx + bs - 1) / bs;
    const auto q = randn(static_cast<std::size_t>(tq) * Q, 4);
    const auto kp = randn(static_cast<std::size_t>(nblocks) * bs * KV, 5);
    const auto vp = randn(kp.size(), 6);
    std::vector<int> table(static_cast<std::size_t>(nblocks));
    std::iota(table.rbegin(), table.rend(), 0);
    paged_shape s{.tq = tq,
                  .start = start,
                  .n_head = nh,
                  .n_kv_head = nkv,
                  .head_dim = hd,
                  .ldq = Q,
                  .ldo = Q};
    const paged_kv kv{
        .k = kp.data(), .v = vp.data(), .blocks = table.data(), .block_size = bs, .kv_dim = KV};
    std::vector<float> scratch(static_cast<std::size_t>(paged_attention_scratch(s)));
    std::vector<float> all(static_cast<std::size_t>(tq) * Q, NAN), parts(all.size(), NAN);
    paged_attention(s, q.data(), kv, all.data(), scratch.data());
    for (const auto [h0, h1] : {std::pair{4, 8}, std::pair{0, 4}}) {
      s.head_begin = h0;
      s.head_end = h1;
      paged_attention(s, q.data(), kv, parts.data(), scratch.data());
    }
    CHECK(std::memcmp(all.data(), parts.data(), all.size() * sizeof(float)) == 0);
    s.head_begin = 2;  // half a group
    s.head_end = 6;
    CHECK_THROWS_WITH(paged_attention(s, q.data(), kv, parts.data(), scratch.data()),
                      doctest::Contains("not whole kv-head groups"));
  }
}
