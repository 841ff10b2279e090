// Matmul family, CPU: the GEMM through the library the tuning table picks (gemm_table.hpp;
// OpenBLAS's cblas_sgemm unless tuned) at the thread's precision (gemm_lib.hpp), row-major.
// Invariants: row-major everywhere; a leading dimension of 0 means the dense width of the stored
// matrix (k or m for a, n or k for b, n for c). The libraries thread the GEMMs themselves;
// nothing here allocates but the bf16 backward's per-thread operand scratch, grown once.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/gemm_backends.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/matmul.hpp"
#include "kernels/parallel.hpp"

namespace zf::kernels::cpu {

// c: [m, n] = alpha * op(a) @ op(b) + beta * c; op(a): [m, k], op(b): [k, n].
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (ldc == 0) ldc = n;
  if (k <= 0) {  // op(a) @ op(b) is empty: only the beta scaling remains (BLAS rejects lda=0)
    for (int i = 0; i < m; ++i) {
      float* ci = c + static_cast<std::size_t>(i) * ldc;
      if (beta == 0.0f) {
        std::fill(ci, ci + n, 0.0f);
      } else {
        for (int j = 0; j < n; ++j) ci[j] *= beta;
      }
    }
    return;
  }
  // a is stored [m, k] (or [k, m] transposed); b is stored [k, n] (or [n, k] transposed).
  if (lda == 0) lda = trans_a ? m : k;
  if (ldb == 0) ldb = trans_b ? k : n;
  // The library from the tuning table (OpenBLAS / oneDNN by default), at this thread's
  // precision (gemm_lib.hpp).
  const precision p = compute_precision();
  const gemm_lib l = choose_gemm_lib(p, trans_a, trans_b, m, n, k);
  gemm_run(l, p, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// x: [n, ic], w: [ic, oc], b: [oc] or nullptr -> y: [n, oc].
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc) {
  float beta = 0.0f;
  if (b != nullptr) {
    // Seed y with the bias and let the GEMM accumulate onto it: OpenBLAS scales C by beta in a
    // separate pass anyway, so this costs no more than beta = 0 and saves a pass over y.
    for (int r = 0; r < n; ++r) std::copy(b, b + oc, y + static_cast<std::size_t>(r) * oc);
    beta = 1.0f;
  }
  gemm(false, false, n, oc, ic, 1.0f, x, ic, w, oc, beta, y, oc);
}

namespace {

// db [oc] += column sums of dy [n, oc], four rows at a time so db is loaded and stored once per
// four rows; the columns split over the OpenMP team (each column's sum is the same either way)
// where the GEMMs run on it too: right after an OpenBLAS GEMM its own threads still spin, and a
// team beside them was slower than one thread (gpt2-124M fp32 step ~3.1 s against ~3.0 s).
void bias_grad(const float* dy, float* db, int n, int oc) {
  const std::size_t team_min =
      gemm_nests(compute_precision()) ? 256 : std::numeric_limits<std::size_t>::max();
  parallel_ranges(static_cast<std::size_t>(oc), 16, team_min, [&](std::size_t j0, std::size_t j1) {
    const std::size_t w_ = static_cast<std::size_t>(oc);
    int r = 0;
    for (; r + 4 <= n; r += 4) {
      const float* d0 = dy + static_cast<std::size_t>(r) * w_;
      const float* d1 = d0 + w_;
      const float* d2 = d1 + w_;
      const float* d3 = d2 + w_;
      for (std::size_t j = j0; j < j1; ++j) db[j] += (d0[j] + d1[j]) + (d2[j] + d3[j]);
    }
    for (; r < n; ++r) {
      const float* d0 = dy + static_cast<std::size_t>(r) * w_;
      for (std::size_t j = j0; j < j1; ++j) db[j] += d0[j];
    }
  });
}

// The rounded operands' scratch of linear_backward (per thread, grown once).
struct backward_scratch {
  std::vector<std::uint16_t> dy16, x16, w16;
};
backward_scratch& tl_backward() {
  thread_local backward_scratch s;
  return s;
}

}  // namespace

// x16: [n, ic], w16: [ic, oc] bf16; dy: [n, oc] -> dx [n, ic] overwritten, dw [ic, oc] and
// db [oc] accumulated.
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc) {
  if (n > 0 && ic > 0 && oc > 0) {
    // dy feeds both GEMMs: rounded once (a [n, oc] pass saved per layer and step).
    std::uint16_t* d16 = grown(tl_backward().dy16, static_cast<std::size_t>(n) * oc);
    round_bf16(dy, n, oc, oc, d16);
    gemm_bf16(false, true, n, ic, oc, 1.0f, d16, oc, w16, oc, 0.0f, dx, ic);
    gemm_bf16(true, false, ic, oc, n, 1.0f, x16, ic, d16, oc, 1.0f, dw, oc);
  }
  if (db != nullptr && n > 0 && oc > 0) bias_grad(dy, db, n, oc);
}

// dy: [n, oc]; dx: [n, ic] overwritten (optional); dw: [ic, oc] and db: [oc] accumulated.
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc) {
  if (compute_precision() == precision::bf16 && dx != nullptr && dw != nullptr && n > 0 && ic > 0 &&
      oc > 0) {
    backward_scratch& s = tl_backward();
    std::uint16_t* w16 = grown(s.w16, static_cast<std::size_t>(ic) * oc);
    std::uint16_t* x16 = grown(s.x16, static_cast<std::size_t>(n) * ic);
    round_bf16(w, ic, oc, oc, w16);
    round_bf16(x, n, ic, ic, x16);
    return linear_backward_bf16(x16, w16, dy, dx, dw, db, n, ic, oc);
  }
  if (dx != nullptr) gemm(false, true, n, ic, oc, 1.0f, dy, oc, w, oc, 0.0f, dx, ic);
  if (dw != nullptr) gemm(true, false, ic, oc, n, 1.0f, x, ic, dy, oc, 1.0f, dw, oc);
  if (db != nullptr && n > 0 && oc > 0) bias_grad(dy, db, n, oc);
}

}  // namespace zf::kernels::cpu
