// Serving kernels against double-precision references: paged attention (both paths, GQA,
// scrambled block tables), RoPE, RMSNorm, SwiGLU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "grad_check.hpp"
#include "kernels/activation.hpp"
#include "kernels/norm.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/rope.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;

namespace {

// Causal GQA attention of tq rows at positions start.. over dense k, v: [ctx, kvd].
std::vector<double> ref_gqa(const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<float>& v, int tq, int start, int nh, int nkv,
                            int hd) {
  const int Q = nh * hd, KV = nkv * hd, group = nh / nkv;
  std::vector<double> out(static_cast<std::size_t>(tq) * Q, 0.0);
  for (int i = 0; i < tq; ++i) {
    const int n = start + i + 1;
    for (int h = 0; h < nh; ++h) {
      const int g = h / group;
      std::vector<double> s(n);
      double mx = -INFINITY;
      for (int j = 0; j < n; ++j) {
        double d = 0;
        for (int e = 0; e < hd; ++e) d += double(q[i * Q + h * hd + e]) * k[j * KV + g * hd + e];
        s[j] = d / std::sqrt(double(hd));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int j = 0; j < n; ++j)
        for (int e = 0; e < hd; ++e) out[i * Q + h * hd + e] += s[j] / sum * v[j * KV + g * hd + e];
    }
  }
  return out;
}

void check_paged(int tq, int start, int nh, int nkv, int hd, int bs) {
  const int ctx = start + tq, Q = nh * hd, KV = nkv * hd;
  const int nblocks = (ctx + bs - 1) / bs + 3;
  auto q = randn(static_cast<std::size_t>(tq) * Q, 1);
  auto kd = randn(static_cast<std::size_t>(ctx) * KV, 2), vd = randn(kd.size(), 3);
  // Scrambled table: logical block i lives in pool block table[i].
  std::vector<int> table(nblocks);
  std::iota(table.begin(), table.end(), 0);
  std::reverse(table.begin(), table.end());
  std::rotate(table.begin(), table.begin() + 2, table.end());
  std::vector<float> kp(static_cast<std::size_t>(nblocks) * bs * KV, NAN), vp(kp.size(), NAN);
  for (int p = 0; p < ctx; ++p) {
    const std::size_t dst = (static_cast<std::size_t>(table[p / bs]) * bs + p % bs) * KV;
    std::copy_n(&kd[static_cast<std::size_t>(p) * KV], KV, &kp[dst]);
    std::copy_n(&vd[static_cast<std::size_t>(p) * KV], KV, &vp[dst]);
  }
  paged_shape s{
      .tq = tq, .start = start, .n_head = nh, .n_kv_head = nkv, .head_dim = hd, .ldq = Q, .ldo = Q};
  paged_kv kv{
      .k = kp.data(), .v = vp.data(), .blocks = table.data(), .block_size = bs, .kv_dim = KV};
  std::vector<float> scratch(static_cast<std::size_t>(paged_attention_scratch(s)));
  std::vector<float> out(static_cast<std::size_t>(tq) * Q);
  paged_attention(s, q.data(), kv, out.data(), scratch.data());
  auto ref = ref_gqa(q, kd, vd, tq, start, nh, nkv, hd);
  CHECK(all_close(out.data(), ref.data(), out.size(), 1e-5, 1e-6));
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
  for (int r = 0; r < n; ++r)
    for (int h = 0; h < nh; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double a = pos[r] * std::pow(10000.0, -2.0 * i / hd);
        const float* xr = &x[(r * nh + h) * hd];
        const float* yr = &y[(r * nh + h) * hd];
        CHECK(yr[i] ==
              doctest::Approx(xr[i] * std::cos(a) - xr[i + hd / 2] * std::sin(a)).epsilon(1e-5));
        CHECK(yr[i + hd / 2] ==
              doctest::Approx(xr[i + hd / 2] * std::cos(a) + xr[i] * std::sin(a)).epsilon(1e-5));
      }
  // position 0 is the identity
  for (int e = 0; e < nh * hd; ++e) CHECK(y[e] == x[e]);
}

TEST_CASE("rmsnorm and swiglu equal their closed forms") {
  const int n = 3, c = 21;
  auto x = randn(static_cast<std::size_t>(n) * c, 5), g = randn(c, 6);
  std::vector<float> y(x.size());
  rmsnorm_forward(x.data(), g.data(), y.data(), n, c, 1e-5f);
  for (int r = 0; r < n; ++r) {
    double ss = 0;
    for (int j = 0; j < c; ++j) ss += double(x[r * c + j]) * x[r * c + j];
    const double rs = 1.0 / std::sqrt(ss / c + 1e-5);
    for (int j = 0; j < c; ++j)
      CHECK(y[r * c + j] == doctest::Approx(x[r * c + j] * rs * g[j]).epsilon(1e-5));
  }
  const int m = 13;
  auto gu = randn(static_cast<std::size_t>(n) * 2 * m, 7, 3.0f);
  std::vector<float> o(static_cast<std::size_t>(n) * m);
  swiglu_forward(gu.data(), o.data(), n, m);
  for (int r = 0; r < n; ++r)
    for (int j = 0; j < m; ++j) {
      const double gt = gu[r * 2 * m + j], up = gu[r * 2 * m + m + j];
      CHECK(o[r * m + j] == doctest::Approx(gt / (1 + std::exp(-gt)) * up).epsilon(1e-5));
    }
}
