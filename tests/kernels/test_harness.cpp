// The kernel harness: every family's fp32 kernel, called through the public dispatch, against its
// one double-precision reference (reference.hpp) over the check rows of shapes.hpp. Overwritten
// outputs are prefilled with NaN (every element must be written); accumulated ones with a known
// value that the reference adds too. Attention and paged attention: test_harness_attention.cpp;
// the cuda twins: test_dispatch.cpp.
//
// Tolerance: |got - want| <= rtol |want| + atol max|want| (harness.hpp `near`).
//   family                 outputs                         rtol     atol
//   gemm, linear           c, y, dx, dw, db                1e-5     1e-6
//   layernorm, rmsnorm     y, mean, rstd                   1e-5     1e-6
//                          dx, dgamma, dbeta               1e-4     1e-5
//   gelu                   y / dx                          2e-6 / 1e-5   1e-7
//   add, accumulate        y                               1.2e-7   0 (one rounding)
//   swiglu                 y, dgu                          1e-6     1e-7
//   rope                   cos/sin tables                  0        1e-7
//                          x rotated / dx rotated back     1e-5     1e-6
//   softmax + xent         loss                            2e-6     1e-7
//                          dlogits                         1e-5     2e-7
//                          softmax_rows                    2e-6     1e-9
//   embedding              out / dwte, dwpe                1.2e-7 / 1e-6   0 / 1e-7
//   adamw                  p, m, v                         2e-6     1e-7
//                          sum_squares                     1e-12    0
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"
#include "kernels/activation.hpp"
#include "kernels/adamw.hpp"
#include "kernels/embedding.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/rope.hpp"
#include "kernels/softmax.hpp"
#include "shapes.hpp"

using namespace zf::kernels;
namespace ref = zf::test::ref;
namespace sh = zf::test::shapes;
using zf::test::near;
using zf::test::randn;
using zf::test::tol;

namespace {

constexpr tol k_gemm{1e-5, 1e-6}, k_norm{1e-5, 1e-6}, k_norm_bwd{1e-4, 1e-5};
constexpr tol k_gelu{2e-6, 1e-7}, k_gelu_bwd{1e-5, 1e-7}, k_add{1.2e-7, 0.0};
constexpr tol k_swiglu{1e-6, 1e-7}, k_rope_table{0.0, 1e-7}, k_rope{1e-5, 1e-6};
constexpr tol k_loss{2e-6, 1e-7}, k_dlogits{1e-5, 2e-7}, k_softmax{2e-6, 1e-9};
constexpr tol k_embed{1.2e-7, 0.0}, k_embed_bwd{1e-6, 1e-7}, k_adamw{2e-6, 1e-7};

const float k_nan = std::nanf("");

std::vector<double> plus(const std::vector<double>& a, double c) {
  std::vector<double> r(a);
  for (auto& x : r) x += c;
  return r;
}

std::vector<int> random_ints(std::size_t n, int hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, hi - 1);
  std::vector<int> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void check_gemm(int m, int n, int k, bool ta, bool tb, bool strided) {
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  const int lda = a_cols + 3 * strided, ldb = b_cols + 5 * strided, ldc = n + 7 * strided;
  auto a = randn(static_cast<std::size_t>(a_rows) * lda, 1);
  auto b = randn(static_cast<std::size_t>(b_rows) * ldb, 2);
  // Dense: beta 0 over NaN garbage (overwrite). Strided: beta 0.3, padding must stay as it was.
  auto c = strided ? randn(static_cast<std::size_t>(m) * ldc, 3)
                   : std::vector<float>(static_cast<std::size_t>(m) * ldc, k_nan);
  const float beta = strided ? 0.3f : 0.0f;
  std::vector<double> want(c.begin(), c.end());
  ref::gemm(ta, tb, m, n, k, 0.7, a.data(), lda, b.data(), ldb, beta, c.data(), want.data(), ldc);
  gemm(ta, tb, m, n, k, 0.7f, a.data(), strided ? lda : 0, b.data(), strided ? ldb : 0, beta,
       c.data(), strided ? ldc : 0);
  CHECK(near(c, want, k_gemm));
}

}  // namespace

TEST_CASE("harness: gemm in every listed transpose, dense and strided") {
  for (const auto& s : sh::gemm_cases) {
    if (!(s.use & sh::check)) continue;
    for (const char* op : {"nn", "tn", "nt", "tt"}) {
      if (std::strstr(s.ops, op) == nullptr) continue;
      for (bool strided : {false, true}) {
        CAPTURE(s.m);
        CAPTURE(s.n);
        CAPTURE(s.k);
        const std::string op_name = op;  // doctest prints a const char* as a pointer
        CAPTURE(op_name);
        CAPTURE(strided);
        check_gemm(s.m, s.n, s.k, op[0] == 't', op[1] == 't', strided);
      }
    }
  }
}

TEST_CASE("harness: linear forward (with and without bias) and backward") {
  for (const auto& s : sh::linear_cases) {
    if (!(s.use & sh::check)) continue;
    const int n = s.n, ic = s.ic, oc = s.oc;
    CAPTURE(n);
    CAPTURE(ic);
    CAPTURE(oc);
    auto x = randn(static_cast<std::size_t>(n) * ic, 10),
         w = randn(static_cast<std::size_t>(ic) * oc, 11);
    auto b = randn(oc, 12), dy = randn(static_cast<std::size_t>(n) * oc, 13);
    for (const float* bias :
         {static_cast<const float*>(b.data()), static_cast<const float*>(nullptr)}) {
      std::vector<float> y(static_cast<std::size_t>(n) * oc, k_nan);
      std::vector<double> want(y.size());
      linear_forward(x.data(), w.data(), bias, y.data(), n, ic, oc);
      ref::linear_forward(x.data(), w.data(), bias, n, ic, oc, want.data());
      CHECK(near(y, want, k_gemm));
    }
    std::vector<float> dx(x.size(), k_nan), dw(w.size(), 0.25f), db(oc, 0.25f);
    linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), n, ic, oc);
    std::vector<double> wdx(dx.size()), wdw(dw.size()), wdb(oc);
    ref::linear_backward(x.data(), w.data(), dy.data(), n, ic, oc, wdx.data(), wdw.data(),
                         wdb.data());
    CHECK(near(dx, wdx, k_gemm));
    CHECK(near(dw, plus(wdw, 0.25), k_gemm));
    CHECK(near(db, plus(wdb, 0.25), k_gemm));
  }
}

TEST_CASE("harness: layernorm and rmsnorm, forward and backward") {
  for (const auto& s : sh::norm_cases) {
    if (!(s.use & sh::check)) continue;
    const int n = s.n, c = s.c;
    const std::size_t nc = static_cast<std::size_t>(n) * c;
    CAPTURE(n);
    CAPTURE(c);
    auto x = randn(nc, 100 + c, 2.0f, 0.5f), g = randn(c, 200 + c, 0.5f, 1.0f);
    auto b = randn(c, 300 + c), dy = randn(nc, 400 + c);
    // LayerNorm
    std::vector<float> y(nc, k_nan), mean(n, k_nan), rstd(n, k_nan);
    layernorm_forward(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), n, c);
    std::vector<double> wy(nc), wm(n), wr(n);
    ref::layernorm(x.data(), g.data(), b.data(), n, c, wy.data(), wm.data(), wr.data());
    CHECK(near(y, wy, k_norm));
    CHECK(near(mean, wm, k_norm));
    CHECK(near(rstd, wr, k_norm));
    std::vector<float> dx(nc, 0.5f), dg(c, -1.0f), db(c, 2.0f);
    layernorm_backward(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                       dg.data(), db.data(), n, c);
    std::vector<double> wdx(nc), wdg(c), wdb(c);
    ref::layernorm_backward(x.data(), g.data(), dy.data(), n, c, 1e-5, wdx.data(), wdg.data(),
                            wdb.data());
    CHECK(near(dx, plus(wdx, 0.5), k_norm_bwd));
    CHECK(near(dg, plus(wdg, -1.0), k_norm_bwd));
    CHECK(near(db, plus(wdb, 2.0), k_norm_bwd));
    // RMSNorm
    std::fill(y.begin(), y.end(), k_nan);
    std::fill(rstd.begin(), rstd.end(), k_nan);
    rmsnorm_forward(x.data(), g.data(), y.data(), rstd.data(), n, c, 1e-5f);
    std::vector<double> rdx(nc);
    ref::rmsnorm(x.data(), g.data(), dy.data(), n, c, 1e-5, wy.data(), wr.data(), rdx.data(),
                 wdg.data());
    CHECK(near(y, wy, k_norm));
    CHECK(near(rstd, wr, k_norm));
    std::fill(dx.begin(), dx.end(), 0.5f);
    std::fill(dg.begin(), dg.end(), -1.0f);
    rmsnorm_backward(x.data(), g.data(), rstd.data(), dy.data(), dx.data(), dg.data(), n, c);
    CHECK(near(dx, plus(rdx, 0.5), k_norm_bwd));
    CHECK(near(dg, plus(wdg, -1.0), k_norm_bwd));
  }
}

TEST_CASE("harness: gelu, add and accumulate over element counts") {
  for (const auto& s : sh::elem_cases) {
    if (!(s.use & sh::check)) continue;
    const std::size_t n = static_cast<std::size_t>(s.n);
    CAPTURE(n);
    auto x = randn(n, 7, 3.0f), dy = randn(n, 8), b = randn(n, 9);
    std::vector<float> y(n, k_nan), dx(n, k_nan);
    gelu_forward(x.data(), y.data(), n);
    gelu_backward(x.data(), dy.data(), dx.data(), n);
    std::vector<double> wy(n), wd(n), ws(n);
    for (std::size_t i = 0; i < n; ++i) {
      wy[i] = ref::gelu(x[i]);
      wd[i] = ref::gelu_grad(x[i]) * dy[i];
      ws[i] = static_cast<double>(x[i]) + b[i];
    }
    CHECK(near(y, wy, k_gelu));
    CHECK(near(dx, wd, k_gelu_bwd));
    std::fill(y.begin(), y.end(), k_nan);
    add_forward(x.data(), b.data(), y.data(), n);
    CHECK(near(y, ws, k_add));
    y = x;
    accumulate(y.data(), b.data(), n);
    CHECK(near(y, ws, k_add));
  }
}

TEST_CASE("harness: swiglu forward and backward") {
  for (const auto& s : sh::swiglu_cases) {
    if (!(s.use & sh::check)) continue;
    const int n = s.n, m = s.c;
    CAPTURE(n);
    CAPTURE(m);
    auto gu = randn(static_cast<std::size_t>(n) * 2 * m, 50 + m, 2.0f);
    auto dy = randn(static_cast<std::size_t>(n) * m, 60 + m);
    std::vector<float> y(dy.size(), k_nan), dgu(gu.size(), k_nan);
    swiglu_forward(gu.data(), y.data(), n, m);
    swiglu_backward(gu.data(), dy.data(), dgu.data(), n, m);
    std::vector<double> wy(y.size()), wdgu(gu.size());
    ref::swiglu_forward(gu.data(), n, m, wy.data());
    ref::swiglu_backward(gu.data(), dy.data(), wdgu.data(), n, m);
    CHECK(near(y, wy, k_swiglu));
    CHECK(near(dgu, wdgu, k_swiglu));
  }
}

TEST_CASE("harness: rope tables, forward and backward on padded rows") {
  for (const auto& s : sh::rope_cases) {
    if (!(s.use & sh::check)) continue;
    const int n = s.n, nh = s.n_head, hd = s.head_dim, ld = nh * hd + s.pad, n_pos = n + 50;
    CAPTURE(n);
    CAPTURE(nh);
    CAPTURE(hd);
    CAPTURE(s.pad);
    std::vector<double> inv_freq(hd / 2);
    for (int i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(500000.0, -2.0 * i / hd);
    std::vector<float> cs(static_cast<std::size_t>(n_pos) * hd / 2, k_nan), sn(cs.size(), k_nan);
    rope_tables(n_pos, hd, inv_freq.data(), cs.data(), sn.data());
    std::vector<double> wc(cs.size()), ws(sn.size());
    for (int p = 0; p < n_pos; ++p) {
      for (int i = 0; i < hd / 2; ++i) {
        wc[static_cast<std::size_t>(p) * hd / 2 + i] = std::cos(p * inv_freq[i]);
        ws[static_cast<std::size_t>(p) * hd / 2 + i] = std::sin(p * inv_freq[i]);
      }
    }
    CHECK(near(cs, wc, k_rope_table));
    CHECK(near(sn, ws, k_rope_table));
    const auto pos = random_ints(n, n_pos, 5 + n);
    auto x = randn(static_cast<std::size_t>(n) * ld, 20 + hd, 2.0f);
    std::vector<double> want(x.size());
    for (int sign : {1, -1}) {
      CAPTURE(sign);
      auto y = x;
      if (sign > 0) {
        rope_forward(y.data(), ld, n, pos.data(), nh, hd, cs.data(), sn.data());
      } else {
        rope_backward(y.data(), ld, n, pos.data(), nh, hd, cs.data(), sn.data());
      }
      ref::rope(x.data(), ld, n, pos.data(), nh, hd, inv_freq.data(), sign, want.data());
      CHECK(near(y, want, k_rope));
    }
  }
}

TEST_CASE("harness: softmax + cross-entropy (forward, fused) and softmax_rows") {
  for (const auto& s : sh::xent_cases) {
    if (!(s.use & sh::check)) continue;
    const int n = s.n, v = s.c;
    const std::size_t nv = static_cast<std::size_t>(n) * v;
    CAPTURE(n);
    CAPTURE(v);
    auto logits = randn(nv, 42 + v, 3.0f);
    auto targets = random_ints(n, v, 43 + v);
    if (n > 1) targets[1] = -1;  // an ignored row
    const float dloss = 0.25f;
    std::vector<float> loss(n, k_nan), loss2(n, k_nan), g = logits;
    softmax_xent_forward(logits.data(), targets.data(), loss.data(), n, v);
    softmax_xent_fused(g.data(), targets.data(), loss2.data(), n, v, dloss);
    std::vector<double> wl(n, 0.0), wg(nv, 0.0);
    for (int r = 0; r < n; ++r) {
      if (targets[r] < 0) continue;
      ref::dvec p;
      wl[r] = ref::xent(logits.data() + static_cast<std::size_t>(r) * v, v, targets[r], &p);
      p[targets[r]] -= 1.0;
      for (int j = 0; j < v; ++j) wg[static_cast<std::size_t>(r) * v + j] = p[j] * dloss;
    }
    CHECK(near(loss, wl, k_loss));
    CHECK(near(loss2, wl, k_loss));
    CHECK(near(g, wg, k_dlogits));
    auto y = logits;
    softmax_rows(y.data(), n, v, 0.5f);
    std::vector<double> wy(nv);
    ref::softmax_rows(logits.data(), n, v, 0.5, wy.data());
    CHECK(near(y, wy, k_softmax));
  }
}

TEST_CASE("harness: embedding forward and backward, with and without positions") {
  for (const auto& s : sh::embedding_cases) {
    if (!(s.use & sh::check)) continue;
    const int b = s.b, t = s.t, c = s.c;
    CAPTURE(b);
    CAPTURE(t);
    CAPTURE(c);
    CAPTURE(s.wpe);
    const auto ids = random_ints(static_cast<std::size_t>(b) * t, s.vocab, 70 + c);
    auto wte = randn(static_cast<std::size_t>(s.vocab) * c, 71);
    auto wpe = randn(static_cast<std::size_t>(s.max_pos) * c, 72);
    const float* pe = s.wpe ? wpe.data() : nullptr;
    std::vector<float> out(static_cast<std::size_t>(b) * t * c, k_nan);
    embedding_forward(ids.data(), wte.data(), pe, out.data(), b, t, c, s.pos0);
    std::vector<double> want(out.size());
    ref::embedding_forward(ids.data(), wte.data(), pe, b, t, c, s.pos0, want.data());
    CHECK(near(out, want, k_embed));
    auto dout = randn(out.size(), 73);
    std::vector<float> dwte(wte.size(), 1.0f), dwpe(wpe.size(), -2.0f);
    embedding_backward(ids.data(), dout.data(), dwte.data(), s.wpe ? dwpe.data() : nullptr, b, t, c,
                       s.pos0);
    std::vector<double> wdte(wte.size(), 1.0), wdpe(wpe.size(), -2.0);
    ref::embedding_backward(ids.data(), dout.data(), b, t, c, s.pos0, wdte.data(),
                            s.wpe ? wdpe.data() : nullptr);
    CHECK(near(dwte, wdte, k_embed_bwd));
    CHECK(near(dwpe, wdpe, k_embed_bwd));
  }
}

TEST_CASE("harness: adamw step from zero and from running state, and sum_squares") {
  for (const auto& s : sh::elem_cases) {
    if (!(s.use & sh::check)) continue;
    const std::size_t n = static_cast<std::size_t>(s.n);
    CAPTURE(n);
    for (int step : {1, 3}) {
      CAPTURE(step);
      auto p = randn(n, 1), g = randn(n, 2, 0.1f);
      std::vector<float> m(n, 0.0f), v(n, 0.0f);
      if (step > 1) {
        m = randn(n, 3, 0.01f);
        v = randn(n, 4, 1e-3f);
        for (auto& x : v) x = std::abs(x);
      }
      std::vector<double> wp(p.begin(), p.end()), wm(m.begin(), m.end()), wv(v.begin(), v.end());
      adamw_params a;
      a.lr = 1e-2f;
      a.beta1 = 0.9f;
      a.beta2 = 0.95f;
      a.eps = 1e-8f;
      a.weight_decay = 0.1f;
      a.step = step;
      a.grad_scale = 0.5f;
      adamw_step(p.data(), g.data(), m.data(), v.data(), n, a);
      ref::adamw_step(wp.data(), wm.data(), wv.data(), g.data(), n, 1e-2, 0.9, 0.95, 1e-8, 0.1,
                      step, 0.5);
      CHECK(near(p, wp, k_adamw));
      CHECK(near(m, wm, k_adamw));
      CHECK(near(v, wv, k_adamw));
    }
    auto x = randn(n, 5);
    CHECK(sum_squares(x.data(), n) ==
          doctest::Approx(ref::sum_squares(x.data(), n)).epsilon(1e-12));
  }
}
