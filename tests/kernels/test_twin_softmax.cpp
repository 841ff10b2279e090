// Softmax + cross-entropy twins (kernels/softmax_cuda.cu) against the cpu kernels, simulated and
// on a GPU (tests/kernels/twin.hpp), over the check rows of shapes.hpp's xent_cases (3 rows of
// 50257: rows much wider than the 1024-thread block, starting at 3 different 16-byte
// alignments) plus rows of 3 (heads of 0..3 scalars before the aligned middle) and 4099 (512
// threads, a tail).
// Tolerances (|got - want| <= rtol |want| + atol max|want|): each exp differs by a few ulp (CUDA's
// expf <= 2 ulp, the simulation's glibc expf, the cpu's polynomial ~1 ulp); the double sums
// differ only in order. So probabilities and dlogits agree to ~4 ulp (rtol 2e-6), the target's
// (p - 1) * dloss to 1e-6 of the row's largest gradient, losses (log(sum) - x[t] + max, O(1..10))
// to 1e-6, log_sum_exp to 1e-6 relative. Ignored rows (negative target) are exactly 0.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "harness.hpp"
#include "kernels/softmax.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;

namespace {

const zf::test::tol k_prob{2e-6, 1e-6};  // softmax rows, dlogits
const zf::test::tol k_loss{1e-6, 1e-6};  // per-row losses

// The check rows of xent_cases plus the extra widths above.
std::vector<sh::rows_case> softmax_shapes() {
  std::vector<sh::rows_case> out;
  for (const auto& s : sh::xent_cases) {
    if (s.use & sh::check) out.push_back(s);
  }
  out.push_back({5, 3, sh::check});
  out.push_back({4, 4099, sh::check});
  return out;
}

// n rows of v logits (scale 3), the last row offset by +100 (exp would overflow without the max).
std::vector<float> logits_input(int n, int v, unsigned seed) {
  auto x = zf::test::randn(static_cast<std::size_t>(n) * v, seed, 3.0f, 1.0f);
  for (int j = 0; j < v; ++j) x[static_cast<std::size_t>(n - 1) * v + j] += 100.0f;
  return x;
}

// Row r's target: r % 3 == 1 -> -1 (ignored), r % 3 == 2 -> the last class, else spread.
std::vector<int> targets_for(int n, int v) {
  std::vector<int> t(n);
  for (int r = 0; r < n; ++r) t[r] = r % 3 == 1 ? -1 : r % 3 == 2 ? v - 1 : (r / 3 * 7919) % v;
  return t;
}

template <class B>
void check_xent(B b, int n, int v) {
  CAPTURE(n);
  CAPTURE(v);
  const auto x = logits_input(n, v, 31 + v);
  const auto t = targets_for(n, v);
  const float dloss = 0.5f;
  auto grad = x;
  std::vector<float> loss(n), loss_fwd(n);
  cpu::softmax_xent_fused(grad.data(), t.data(), loss.data(), n, v, dloss);
  cpu::softmax_xent_forward(x.data(), t.data(), loss_fwd.data(), n, v);

  auto d_t = b.upload(t);
  auto d_g = b.upload(x), d_loss = b.upload(std::vector<float>(n, NAN));
  ZF_TWIN(b, softmax_xent_fused, d_g.p, d_t.p, d_loss.p, n, v, dloss);
  const auto g_twin = d_g.host(), loss_twin = d_loss.host();
  CHECK(zf::test::near(g_twin, widen(grad), k_prob));
  CHECK(zf::test::near(loss_twin, widen(loss), k_loss));
  for (int r = 0; r < n; ++r) {
    if (t[r] >= 0) continue;
    CAPTURE(r);
    CHECK(loss_twin[r] == 0.0f);
    CHECK(std::all_of(g_twin.begin() + r * std::size_t(v),
                      g_twin.begin() + (r + 1) * std::size_t(v),
                      [](float g) { return g == 0.0f; }));
  }
  // Deterministic: the same logits give the same bits.
  auto e_g = b.upload(x), e_loss = b.upload(std::vector<float>(n, NAN));
  ZF_TWIN(b, softmax_xent_fused, e_g.p, d_t.p, e_loss.p, n, v, dloss);
  CHECK(e_g.host() == g_twin);
  CHECK(e_loss.host() == loss_twin);

  // Forward only: logits untouched, the fused kernel's losses bit for bit.
  auto d_x = b.upload(x), f_loss = b.upload(std::vector<float>(n, NAN));
  ZF_TWIN(b, softmax_xent_forward, d_x.p, d_t.p, f_loss.p, n, v);
  CHECK(zf::test::near(f_loss.host(), widen(loss_fwd), k_loss));
  CHECK(f_loss.host() == loss_twin);
  CHECK(d_x.host() == x);
}

template <class B>
void check_softmax_rows(B b, int n, int v) {
  CAPTURE(n);
  CAPTURE(v);
  const auto x = logits_input(n, v, 41 + v);
  for (float scale : {1.0f, 0.125f}) {
    CAPTURE(scale);
    auto want = x;
    cpu::softmax_rows(want.data(), n, v, scale);
    auto d = b.upload(x);
    ZF_TWIN(b, softmax_rows, d.p, n, v, scale);
    CHECK(zf::test::near(d.host(), widen(want), k_prob));
  }
}

}  // namespace

TEST_CASE("cuda twin: softmax_xent_fused and softmax_xent_forward equal the cpu kernels") {
  zf::test::twin::both("the softmax_xent twins", [](auto b) {
    for (const auto& s : softmax_shapes()) check_xent(b, s.n, s.c);
  });
}

TEST_CASE("cuda twin: softmax_rows equals the cpu kernel") {
  zf::test::twin::both("the softmax_rows twin", [](auto b) {
    for (const auto& s : softmax_shapes()) check_softmax_rows(b, s.n, s.c);
  });
}

TEST_CASE("cuda twin: log_sum_exp equals the cpu kernel") {
  zf::test::twin::both("the log_sum_exp twin", [](auto b) {
    for (int n : {1, 2, 7, 33, 1000, 4099, 50257}) {
      CAPTURE(n);
      auto x = zf::test::randn(static_cast<std::size_t>(n), 51 + n, 4.0f, 20.0f);
      const double want = cpu::log_sum_exp(x.data(), n);
      auto d = b.upload(x);
      const double got = ZF_TWIN(b, log_sum_exp, d.p, n);
      CHECK(std::abs(got - want) <= 1e-6 * std::max(1.0, std::abs(want)));
      CHECK(ZF_TWIN(b, log_sum_exp, d.p, n) == got);  // deterministic
      // Through an unaligned start (a scalar head before the vector loads).
      if (n > 3) {
        const double want1 = cpu::log_sum_exp(x.data() + 1, n - 1);
        const double got1 = ZF_TWIN(b, log_sum_exp, d.p + 1, n - 1);
        CHECK(std::abs(got1 - want1) <= 1e-6 * std::max(1.0, std::abs(want1)));
      }
    }
  });
}
