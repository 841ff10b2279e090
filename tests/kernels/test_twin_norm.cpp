// Norm twins (kernels/norm_cuda.cu) against the cpu kernels, simulated and on a GPU
// (tests/kernels/twin.hpp), over the check rows of shapes.hpp's norm_cases plus a view whose
// pointers are off 16-byte alignment (the scalar path at a width that is a multiple of 4) and
// 2051 rows (backward row chunks of more than the minimum 4 rows).
// Tolerances (|got - want| <= rtol |want| + atol max|want|): the twin runs the cpu kernel's
// operations per element and differs only in the order of the row sums (warp lanes + butterfly
// against the cpu's 8/16 float lanes) and of the column sums (row chunks, then chunk partials,
// against the cpu's running sum), plus FMA contraction. Row statistics then differ by an ulp or
// so; one row per shape is offset by 100, where one ulp of its mean (~8e-6) moves y by ~1e-6 of
// the largest y, hence atol 5e-6 for y and 3e-6 relative for mean/rstd. dx and the column sums
// dgamma/dbeta (up to 2051 rows summed in float): 1e-5. Worst measured error/tolerance ratios in
// the simulation (ZF_TOL_REPORT=1): below 0.08.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <vector>

#include "harness.hpp"
#include "kernels/norm.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;

namespace {

const zf::test::tol k_y{1e-5, 5e-6};       // normalized outputs
const zf::test::tol k_stats{3e-6, 1e-7};   // mean / rstd
const zf::test::tol k_dx{1e-5, 1e-5};      // dx (accumulated onto a random start)
const zf::test::tol k_params{1e-5, 1e-5};  // dgamma / dbeta (column sums over rows)

// v with `pad` leading zeros: the device view starts at .p + pad.
std::vector<float> padded(const std::vector<float>& v, int pad) {
  std::vector<float> out(static_cast<std::size_t>(pad), 0.0f);
  out.insert(out.end(), v.begin(), v.end());
  return out;
}

std::vector<float> unpadded(const std::vector<float>& v, int pad) {
  return {v.begin() + pad, v.end()};
}

// n rows of c; row n-1 offset by 100 (the mean is taken relative to x[0] for such rows).
std::vector<float> rows_input(int n, int c, unsigned seed) {
  auto x = zf::test::randn(static_cast<std::size_t>(n) * c, seed, 1.5f, 0.3f);
  for (int j = 0; j < c; ++j) x[static_cast<std::size_t>(n - 1) * c + j] += 100.0f;
  return x;
}

// LayerNorm forward (with and without mean/rstd) and backward (onto nonzero dx, dgamma, dbeta)
// of n rows of c, the device views `pad` floats into their buffers.
template <class B>
void check_layernorm(B b, int n, int c, int pad) {
  CAPTURE(n);
  CAPTURE(c);
  CAPTURE(pad);
  const std::size_t nc = static_cast<std::size_t>(n) * c;
  const auto x = rows_input(n, c, 11 + c);
  const auto gamma = zf::test::randn(c, 12 + c, 0.5f, 1.0f), beta = zf::test::randn(c, 13 + c);
  std::vector<float> y(nc), mean(n), rstd(n);
  cpu::layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), n,
                         c, 1e-5f);

  auto dx_ = b.upload(padded(x, pad)), dg_ = b.upload(padded(gamma, pad));
  auto db_ = b.upload(padded(beta, pad));
  auto dy_ = b.upload(std::vector<float>(nc + pad, NAN));
  auto dmean = b.upload(std::vector<float>(n, NAN)), drstd = b.upload(std::vector<float>(n, NAN));
  ZF_TWIN(b, layernorm_forward, dx_.p + pad, dg_.p + pad, db_.p + pad, dy_.p + pad, dmean.p,
          drstd.p, n, c, 1e-5f);
  const auto y_twin = unpadded(dy_.host(), pad);
  CHECK(zf::test::near(y_twin, widen(y), k_y));
  CHECK(zf::test::near(dmean.host(), widen(mean), k_stats));
  CHECK(zf::test::near(drstd.host(), widen(rstd), k_stats));
  // Inference form: mean/rstd nullptr, y bit-identical.
  auto dy2 = b.upload(std::vector<float>(nc + pad, NAN));
  ZF_TWIN(b, layernorm_forward, dx_.p + pad, dg_.p + pad, db_.p + pad, dy2.p + pad, nullptr,
          nullptr, n, c, 1e-5f);
  CHECK(unpadded(dy2.host(), pad) == y_twin);

  // Backward from the cpu's statistics, onto nonzero accumulators.
  const auto dy = zf::test::randn(nc, 14 + c);
  const auto dx0 = zf::test::randn(nc, 15 + c, 0.5f), dgam0 = zf::test::randn(c, 16 + c);
  const auto dbet0 = zf::test::randn(c, 17 + c);
  auto dx = dx0, dgam = dgam0, dbet = dbet0;
  cpu::layernorm_backward(x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                          dgam.data(), dbet.data(), n, c);
  auto d_mean = b.upload(mean), d_rstd = b.upload(rstd), d_dy = b.upload(padded(dy, pad));
  auto d_dx = b.upload(padded(dx0, pad)), d_dg = b.upload(padded(dgam0, pad));
  auto d_db = b.upload(padded(dbet0, pad));
  ZF_TWIN(b, layernorm_backward, dx_.p + pad, dg_.p + pad, d_mean.p, d_rstd.p, d_dy.p + pad,
          d_dx.p + pad, d_dg.p + pad, d_db.p + pad, n, c);
  const auto dx_twin = unpadded(d_dx.host(), pad), dg_twin = unpadded(d_dg.host(), pad);
  const auto db_twin = unpadded(d_db.host(), pad);
  CHECK(zf::test::near(dx_twin, widen(dx), k_dx));
  CHECK(zf::test::near(dg_twin, widen(dgam), k_params));
  CHECK(zf::test::near(db_twin, widen(dbet), k_params));
  // Deterministic column sums: the same start gives the same bits.
  auto e_dx = b.upload(padded(dx0, pad)), e_dg = b.upload(padded(dgam0, pad));
  auto e_db = b.upload(padded(dbet0, pad));
  ZF_TWIN(b, layernorm_backward, dx_.p + pad, dg_.p + pad, d_mean.p, d_rstd.p, d_dy.p + pad,
          e_dx.p + pad, e_dg.p + pad, e_db.p + pad, n, c);
  CHECK(unpadded(e_dx.host(), pad) == dx_twin);
  CHECK(unpadded(e_dg.host(), pad) == dg_twin);
  CHECK(unpadded(e_db.host(), pad) == db_twin);
}

// RMSNorm forward (rstd kept and nullptr) and backward (onto nonzero dx, dgamma).
template <class B>
void check_rmsnorm(B b, int n, int c, int pad) {
  CAPTURE(n);
  CAPTURE(c);
  CAPTURE(pad);
  const std::size_t nc = static_cast<std::size_t>(n) * c;
  const auto x = rows_input(n, c, 21 + c);
  const auto gamma = zf::test::randn(c, 22 + c, 0.5f, 1.0f);
  std::vector<float> y(nc), rstd(n);
  cpu::rmsnorm_forward(x.data(), gamma.data(), y.data(), rstd.data(), n, c, 1e-6f);

  auto dx_ = b.upload(padded(x, pad)), dg_ = b.upload(padded(gamma, pad));
  auto dy_ = b.upload(std::vector<float>(nc + pad, NAN));
  auto drstd = b.upload(std::vector<float>(n, NAN));
  ZF_TWIN(b, rmsnorm_forward, dx_.p + pad, dg_.p + pad, dy_.p + pad, drstd.p, n, c, 1e-6f);
  const auto y_twin = unpadded(dy_.host(), pad);
  CHECK(zf::test::near(y_twin, widen(y), k_y));
  CHECK(zf::test::near(drstd.host(), widen(rstd), k_stats));
  auto dy2 = b.upload(std::vector<float>(nc + pad, NAN));
  ZF_TWIN(b, rmsnorm_forward, dx_.p + pad, dg_.p + pad, dy2.p + pad, nullptr, n, c, 1e-6f);
  CHECK(unpadded(dy2.host(), pad) == y_twin);

  const auto dy = zf::test::randn(nc, 24 + c);
  const auto dx0 = zf::test::randn(nc, 25 + c, 0.5f), dgam0 = zf::test::randn(c, 26 + c);
  auto dx = dx0, dgam = dgam0;
  cpu::rmsnorm_backward(x.data(), gamma.data(), rstd.data(), dy.data(), dx.data(), dgam.data(), n,
                        c);
  auto d_rstd = b.upload(rstd), d_dy = b.upload(padded(dy, pad));
  auto d_dx = b.upload(padded(dx0, pad)), d_dg = b.upload(padded(dgam0, pad));
  ZF_TWIN(b, rmsnorm_backward, dx_.p + pad, dg_.p + pad, d_rstd.p, d_dy.p + pad, d_dx.p + pad,
          d_dg.p + pad, n, c);
  const auto dx_twin = unpadded(d_dx.host(), pad), dg_twin = unpadded(d_dg.host(), pad);
  CHECK(zf::test::near(dx_twin, widen(dx), k_dx));
  CHECK(zf::test::near(dg_twin, widen(dgam), k_params));
  auto e_dx = b.upload(padded(dx0, pad)), e_dg = b.upload(padded(dgam0, pad));
  ZF_TWIN(b, rmsnorm_backward, dx_.p + pad, dg_.p + pad, d_rstd.p, d_dy.p + pad, e_dx.p + pad,
          e_dg.p + pad, n, c);
  CHECK(unpadded(e_dx.host(), pad) == dx_twin);
  CHECK(unpadded(e_dg.host(), pad) == dg_twin);
}

}  // namespace

TEST_CASE("cuda twin: layernorm forward and backward equal the cpu kernels") {
  zf::test::twin::both("the layernorm twin", [](auto b) {
    for (const auto& s : sh::norm_cases) {
      if (s.use & sh::check) check_layernorm(b, s.n, s.c, 0);
    }
    check_layernorm(b, 9, 64, 1);  // misaligned views: the scalar path, three row chunks
  });
}

TEST_CASE("cuda twin: rmsnorm forward and backward equal the cpu kernels") {
  zf::test::twin::both("the rmsnorm twin", [](auto b) {
    for (const auto& s : sh::norm_cases) {
      if (s.use & sh::check) check_rmsnorm(b, s.n, s.c, 0);
    }
    check_rmsnorm(b, 9, 64, 3);
    // Chunks of 5 rows (at most 512 chunks), the last of 1: the chunking layernorm shares. Only
    // here (1 s of simulated warps; layernorm's backward would double it).
    check_rmsnorm(b, 2051, 5, 0);
  });
}
