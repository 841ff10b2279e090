// AdamW twin (kernels/adamw_cuda.cu) against the cpu kernel, simulated and on a GPU
// (tests/kernels/twin.hpp).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "harness.hpp"
#include "kernels/adamw.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;

namespace {

// The check sizes plus one that spans many blocks of the grid-stride loops (larger on a GPU).
template <class B>
std::vector<std::size_t> adamw_sizes() {
  std::vector<std::size_t> sizes;
  for (const auto& s : sh::elem_cases) {
    if (s.use & sh::check) sizes.push_back(static_cast<std::size_t>(s.n));
  }
  sizes.push_back(B::simulated ? 256 * 4096 + 3 : (std::size_t{1} << 22) + 3);
  return sizes;
}

}  // namespace

TEST_CASE("cuda twin: adamw_step and sum_squares equal the cpu kernels") {
  zf::test::twin::both("the adamw twin", [](auto b) {
    using B = decltype(b);
    const zf::test::tol twin{1e-6, 1e-7};  // a few ulp: FMA contraction may differ
    for (std::size_t n : adamw_sizes<B>()) {
      CAPTURE(n);
      for (int step : {1, 3}) {
        CAPTURE(step);
        auto p = zf::test::randn(n, 1), g = zf::test::randn(n, 2, 0.1f);
        auto m = zf::test::randn(n, 3, 0.01f), v = zf::test::randn(n, 4, 1e-3f);
        for (auto& x : v) x = std::abs(x);
        adamw_params a;
        a.lr = 1e-2f;
        a.weight_decay = 0.1f;
        a.step = step;
        a.grad_scale = 0.5f;
        auto dp = b.upload(p), dg = b.upload(g), dm = b.upload(m), dv = b.upload(v);
        cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, a);
        ZF_TWIN(b, adamw_step, dp.p, dg.p, dm.p, dv.p, n, a);
        CHECK(zf::test::near(dp.host(), widen(p), twin));
        CHECK(zf::test::near(dm.host(), widen(m), twin));
        CHECK(zf::test::near(dv.host(), widen(v), twin));
      }
      const auto x = zf::test::randn(n, 5);
      auto dx = b.upload(x);
      const double cpu_sum = cpu::sum_squares(x.data(), n);
      const double twin_sum = ZF_TWIN(b, sum_squares, dx.p, n);
      CHECK(twin_sum == doctest::Approx(cpu_sum).epsilon(1e-12));
      CHECK(ZF_TWIN(b, sum_squares, dx.p, n) == twin_sum);  // deterministic: same bits again
    }
  });
}
