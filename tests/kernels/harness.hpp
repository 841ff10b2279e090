#pragma once
// Helpers of the kernel harness (test_harness*.cpp) and of the per-family tests that share its
// fixtures: the closeness test against a double reference, column extraction from fused rows,
// the paged-attention fixture (scrambled block table over a NaN-filled pool), and a lent
// kernel_pool that runs each piece on a thread of its own.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "grad_check.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/paged_attention.hpp"
#include "reference.hpp"

namespace zf::test {

// v as doubles: a float result compared by near() against another backend's floats.
inline std::vector<double> widen(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

// The message of the kernels::kernel_error f throws ("" when it does not throw).
template <class F>
std::string kernel_error_of(F&& f) {
  try {
    f();
  } catch (const kernels::kernel_error& e) {
    return e.what();
  }
  return {};
}

// Tolerance against a reference: |got - want| <= rtol |want| + atol max|want|, i.e. atol is
// relative to the largest magnitude of the reference output (NaN never passes). With
// ZF_TOL_REPORT=1 in the environment every check prints its worst error / tolerance ratio to
// stderr ("TOL 0.31"): how much headroom a tolerance has.
struct tol {
  double rtol, atol;
};

inline bool near(const float* got, const double* want, std::size_t n, tol t) {
  double scale = 0.0;
  for (std::size_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(want[i]));
  double worst = 0.0;
  std::size_t wi = 0;
  bool ok = true;
  for (std::size_t i = 0; i < n; ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    const double bound = t.rtol * std::abs(want[i]) + t.atol * scale;
    if (!(err <= bound)) {
      const double r = bound > 0 ? err / bound : INFINITY;
      if (ok || !(r <= worst)) {
        worst = r;
        wi = i;
      }
      ok = false;
    }
  }
  if (std::getenv("ZF_TOL_REPORT")) {
    double w = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double bound = t.rtol * std::abs(want[i]) + t.atol * scale;
      w = std::max(w, std::abs(static_cast<double>(got[i]) - want[i]) / bound);
    }
    std::fprintf(stderr, "TOL %g\n", w);
  }
  if (!ok) {
    MESSAGE("worst at " << wi << " of " << n << ": got " << got[wi] << " want " << want[wi] << " ("
                        << worst << "x the tolerance)");
  }
  return ok;
}

inline bool near(const std::vector<float>& got, const std::vector<double>& want, tol t) {
  REQUIRE(got.size() == want.size());
  return near(got.data(), want.data(), got.size(), t);
}

// Columns [col0, col0 + C) of a [rows, ld] buffer, densely.
inline std::vector<float> columns(const std::vector<float>& buf, int rows, int ld, int col0,
                                  int C) {
  std::vector<float> out(static_cast<std::size_t>(rows) * C);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < C; ++c) out[r * C + c] = buf[static_cast<std::size_t>(r) * ld + col0 + c];
  }
  return out;
}

// A pool to lend the kernels (kernels::kernel_pool_scope) with `threads` threads: run(n, fn)
// starts one thread per piece, and *pieces holds the last job's n.
inline kernels::kernel_pool thread_per_piece_pool(int threads, int* pieces) {
  kernels::kernel_pool pool;
  pool.threads = threads;
  pool.run = [pieces](int n, const std::function<void(int)>& fn) {
    *pieces = n;
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i) ts.emplace_back(fn, i);
    for (auto& t : ts) t.join();
  };
  return pool;
}

// Paged attention of tq rows at positions start.. (n_head query heads, n_kv kv heads of hd, KV
// blocks of bs rows in a scrambled table over a NaN-filled pool): the kernel's output and
// ref::attention_forward on the dense K/V, both [tq, n_head * hd].
struct paged_run {
  std::vector<float> out;
  ref::dvec want;
};

inline paged_run run_paged(int tq, int start, int nh, int nkv, int hd, int bs) {
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
  kernels::paged_shape s{
      .tq = tq, .start = start, .n_head = nh, .n_kv_head = nkv, .head_dim = hd, .ldq = Q, .ldo = Q};
  kernels::paged_kv kv{
      .k = kp.data(), .v = vp.data(), .blocks = table.data(), .block_size = bs, .kv_dim = KV};
  std::vector<float> scratch(static_cast<std::size_t>(kernels::paged_attention_scratch(s)));
  paged_run r;
  r.out.assign(static_cast<std::size_t>(tq) * Q, NAN);
  kernels::paged_attention(s, q.data(), kv, r.out.data(), scratch.data());
  const kernels::attention_shape dense{tq, ctx, start, nh, hd, Q, KV, KV, Q, nkv};
  ref::dvec att;
  ref::attention_forward(dense, q.data(), kd.data(), vd.data(), r.want, att);
  return r;
}

}  // namespace zf::test
