// The element-wise and gather families' twins (activation_cuda.cu, rope_cuda.cu,
// embedding_cuda.cu) against their cpu kernels, simulated and on a GPU (tests/kernels/twin.hpp),
// and the embedding backward's host plan.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "harness.hpp"
#include "kernels/activation.hpp"
#include "kernels/embedding.hpp"
#include "kernels/rope.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;

namespace {

// expf against the cpu kernel's polynomial (about 1 ulp each), and FMA contraction.
constexpr zf::test::tol k_ulps{4e-7, 1e-7};

// Inputs spread over GELU's and SiLU's regimes, including the cut-offs (|x| > 10, x < -80).
std::vector<float> spread(std::size_t n, unsigned seed) {
  auto x = zf::test::randn(n, seed, 4.0f);
  const float edges[] = {-100.0f, -81.0f, -12.0f, -9.0f, 0.0f, 11.0f, 104.0f};
  for (std::size_t i = 0; i < n && i < 7; ++i) x[i * 3 % n] = edges[i];
  return x;
}

}  // namespace

TEST_CASE("cuda twin: gelu, add, accumulate equal the cpu kernels") {
  zf::test::twin::both("the activation twins", [](auto b) {
    for (const auto& c : sh::elem_cases) {
      if (!(c.use & sh::check)) continue;
      const std::size_t n = static_cast<std::size_t>(c.n);
      CAPTURE(n);
      const auto x = spread(n, 1), dy = zf::test::randn(n, 2);
      std::vector<float> y(n), dx(n), sum(n);
      std::vector<std::uint16_t> y16(n);
      cpu::gelu_forward(x.data(), y.data(), n);
      cpu::gelu_backward(x.data(), dy.data(), dx.data(), n);
      cpu::gelu_forward_bf16(x.data(), y16.data(), n);
      cpu::add_forward(x.data(), dy.data(), sum.data(), n);
      auto gx = b.upload(x), gdy = b.upload(dy), gy = b.upload(std::vector<float>(n, 7.0f));
      auto g16 = b.upload(std::vector<std::uint16_t>(n));
      ZF_TWIN(b, gelu_forward, gx.p, gy.p, n);
      CHECK(zf::test::near(gy.host(), widen(y), k_ulps));
      ZF_TWIN(b, gelu_forward_bf16, gx.p, g16.p, n);
      const auto got16 = g16.host();
      std::size_t off = 0;  // bf16 of a few-ulp fp32 difference: at most one bf16 ulp apart
      for (std::size_t i = 0; i < n; ++i) off += std::abs(int(got16[i]) - int(y16[i])) > 1;
      CHECK(off == 0);
      ZF_TWIN(b, gelu_backward, gx.p, gdy.p, gdy.p, n);  // dx aliases dy, as allowed
      CHECK(zf::test::near(gdy.host(), widen(dx), k_ulps));
      auto ga = b.upload(x), gb = b.upload(dy);
      ZF_TWIN(b, add_forward, ga.p, gb.p, ga.p, n);  // y aliases a
      CHECK(ga.host() == sum);
      auto acc = b.upload(x);
      ZF_TWIN(b, accumulate, acc.p, gb.p, n);
      CHECK(acc.host() == sum);
      ZF_TWIN(b, copy, acc.p, gx.p, n);  // the device's own moves
      CHECK(acc.host() == x);
      ZF_TWIN(b, clear, acc.p, n);
      CHECK(acc.host() == std::vector<float>(n, 0.0f));
    }
  });
}

TEST_CASE("cuda twin: bias_add equals the cpu kernel row by row") {
  zf::test::twin::both("the bias_add twin", [](auto b) {
    for (const auto& c : sh::swiglu_cases) {  // rows x widths, odd ones included
      if (!(c.use & sh::check)) continue;
      CAPTURE(c.n);
      CAPTURE(c.c);
      const auto y = zf::test::randn(std::size_t(c.n) * c.c, 6), bias = zf::test::randn(c.c, 7);
      auto want = y;
      cpu::bias_add(want.data(), bias.data(), c.n, c.c);
      CHECK(want[std::size_t(c.n - 1) * c.c] == y[std::size_t(c.n - 1) * c.c] + bias[0]);
      auto gy = b.upload(y), gb = b.upload(bias);
      ZF_TWIN(b, bias_add, gy.p, gb.p, c.n, c.c);
      CHECK(gy.host() == want);  // one float add per element: the same bits
    }
  });
}

TEST_CASE("cuda twin: swiglu forward and backward equal the cpu kernels") {
  zf::test::twin::both("the swiglu twins", [](auto b) {
    for (const auto& c : sh::swiglu_cases) {
      if (!(c.use & sh::check)) continue;
      CAPTURE(c.n);
      CAPTURE(c.c);
      const std::size_t rows = static_cast<std::size_t>(c.n), m = static_cast<std::size_t>(c.c);
      const auto gu = spread(rows * 2 * m, 3), dy = zf::test::randn(rows * m, 4);
      std::vector<float> y(rows * m), dgu(rows * 2 * m);
      cpu::swiglu_forward(gu.data(), y.data(), c.n, c.c);
      cpu::swiglu_backward(gu.data(), dy.data(), dgu.data(), c.n, c.c);
      auto ggu = b.upload(gu), gdy = b.upload(dy), gy = b.upload(std::vector<float>(rows * m));
      ZF_TWIN(b, swiglu_forward, ggu.p, gy.p, c.n, c.c);
      CHECK(zf::test::near(gy.host(), widen(y), k_ulps));
      ZF_TWIN(b, swiglu_backward, ggu.p, gdy.p, ggu.p, c.n, c.c);  // dgu aliases gu, as allowed
      CHECK(zf::test::near(ggu.host(), widen(dgu), k_ulps));
    }
  });
}

TEST_CASE("cuda twin: rope forward and backward equal the cpu kernels, padding untouched") {
  zf::test::twin::both("the rope twins", [](auto b) {
    for (const auto& c : sh::rope_cases) {
      if (!(c.use & sh::check)) continue;
      CAPTURE(c.n);
      CAPTURE(c.head_dim);
      const int ld = c.n_head * c.head_dim + c.pad, n_pos = 3 * c.n + 5, half = c.head_dim / 2;
      std::vector<double> inv_freq(half);
      for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / c.head_dim);
      std::vector<float> cs(static_cast<std::size_t>(n_pos) * half), sn(cs.size());
      cpu::rope_tables(n_pos, c.head_dim, inv_freq.data(), cs.data(), sn.data());
      std::vector<int> pos(c.n);
      for (int r = 0; r < c.n; ++r) pos[r] = (r * 7 + 2) % n_pos;  // unordered positions
      const auto x = zf::test::randn(static_cast<std::size_t>(c.n) * ld, 5);
      auto fwd = x, bwd = x;
      cpu::rope_forward(fwd.data(), ld, c.n, pos.data(), c.n_head, c.head_dim, cs.data(),
                        sn.data());
      cpu::rope_backward(bwd.data(), ld, c.n, pos.data(), c.n_head, c.head_dim, cs.data(),
                         sn.data());
      auto gx = b.upload(x), gx2 = b.upload(x), gpos = b.upload(pos), gc = b.upload(cs),
           gs = b.upload(sn);
      ZF_TWIN(b, rope_forward, gx.p, ld, c.n, gpos.p, c.n_head, c.head_dim, gc.p, gs.p);
      ZF_TWIN(b, rope_backward, gx2.p, ld, c.n, gpos.p, c.n_head, c.head_dim, gc.p, gs.p);
      CHECK(zf::test::near(gx.host(), widen(fwd), k_ulps));  // pad columns: equal to x, exactly
      CHECK(zf::test::near(gx2.host(), widen(bwd), k_ulps));
    }
  });
}

TEST_CASE("embedding plan: positions grouped by id, ascending ids, positions in order") {
  embedding_grad_plan p;
  const std::vector<int> ids{5, 2, 5, 9, 2, 2, 0};
  plan_embedding_grad(ids.data(), static_cast<int>(ids.size()), p);
  CHECK(p.ids == std::vector<int>{0, 2, 5, 9});
  CHECK(p.starts == std::vector<int>{0, 1, 4, 6, 7});
  CHECK(p.order == std::vector<int>{6, 1, 4, 5, 0, 2, 3});
  plan_embedding_grad(ids.data(), 0, p);  // reused, emptied
  CHECK(p.ids.empty());
  CHECK(p.starts == std::vector<int>{0});
}

TEST_CASE("cuda twin: embedding forward and backward give the cpu kernels' bits") {
  zf::test::twin::both("the embedding twins", [](auto b) {
    for (const auto& c : sh::embedding_cases) {
      if (!(c.use & sh::check)) continue;
      CAPTURE(c.b);
      CAPTURE(c.t);
      CAPTURE(c.c);
      const std::size_t rows = static_cast<std::size_t>(c.b) * c.t, cc = c.c;
      std::vector<int> ids(rows);
      for (std::size_t r = 0; r < rows; ++r) ids[r] = static_cast<int>((r * 5 + r / 3) % c.vocab);
      const auto wte = zf::test::randn(static_cast<std::size_t>(c.vocab) * cc, 6);
      const auto wpe = zf::test::randn(static_cast<std::size_t>(c.max_pos + 1) * cc, 7);
      const auto dout = zf::test::randn(rows * cc, 8);
      const float* wpe_p = c.wpe ? wpe.data() : nullptr;
      std::vector<float> out(rows * cc), dwte = zf::test::randn(wte.size(), 9), dwpe = wpe;
      auto gdwte = b.upload(dwte), gdwpe = b.upload(dwpe);
      cpu::embedding_forward(ids.data(), wte.data(), wpe_p, out.data(), c.b, c.t, c.c, c.pos0);
      cpu::embedding_backward(ids.data(), dout.data(), dwte.data(), c.wpe ? dwpe.data() : nullptr,
                              c.b, c.t, c.c, c.pos0);
      auto gids = b.upload(ids), gwte = b.upload(wte), gwpe = b.upload(wpe), gdout = b.upload(dout);
      auto gout = b.upload(std::vector<float>(rows * cc));
      ZF_TWIN(b, embedding_forward, gids.p, gwte.p, c.wpe ? gwpe.p : nullptr, gout.p, c.b, c.t, c.c,
              c.pos0);
      CHECK(gout.host() == out);
      ZF_TWIN(b, embedding_backward, gids.p, gdout.p, gdwte.p, c.wpe ? gdwpe.p : nullptr, c.b, c.t,
              c.c, c.pos0);
      CHECK(gdwte.host() == dwte);  // accumulated from nonzero values, same order, same bits
      CHECK(gdwpe.host() == dwpe);
    }
  });
}
