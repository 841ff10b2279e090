// Batch-invariant GEMM, CPU (see matmul_invariant.hpp for the per-element order).
// Not transposed: register tiles of 4 rows x 16 columns (8 accumulators); the k loop is cut
// into blocks that continue each element's FMA chain through c, so blocking changes locality,
// never arithmetic. Row and column remainders run the same chain one row / 8 / 1 lanes at a
// time (a vector FMA lane and std::fma round identically).
// Transposed: dots of contiguous rows, 4 rows of a against one row of b at a time, b in blocks
// of rows that stay in cache; each dot is 8 lanes over k, a fixed tree over the lanes, then the
// k tail in order.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels/matmul_invariant.hpp"

namespace zf::kernels::cpu {
namespace {

constexpr int k_kb = 256;  // k block (rows of b kept hot)
constexpr int k_nb = 512;  // column block of b (not transposed)
constexpr int k_jb = 64;   // rows of b per block (transposed)

using sz = std::size_t;

// c[r, j0 .. j0+W) for R rows, W in {16, 8}: chain over k in [k0, k1) continuing from c (or 0
// when first and beta == 0).
template <int R, int W>
void tile(const float* a, sz lda, const float* b, sz ldb, float* c, sz ldc, int k0, int k1,
          bool from_zero) {
  constexpr int V = W / 8;
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = from_zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + 8 * v);
  for (int kk = k0; kk < k1; ++kk) {
    __m256 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(b + sz(kk) * ldb + 8 * v);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + kk);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
}

// One column, R rows, scalar: the same chain as one vector lane.
template <int R>
void tile1(const float* a, sz lda, const float* b, sz ldb, float* c, sz ldc, int k0, int k1,
           bool from_zero) {
  float acc[R];
  for (int r = 0; r < R; ++r) acc[r] = from_zero ? 0.0f : c[r * ldc];
  for (int kk = k0; kk < k1; ++kk)
    for (int r = 0; r < R; ++r) acc[r] = std::fma(a[r * lda + kk], b[sz(kk) * ldb], acc[r]);
  for (int r = 0; r < R; ++r) c[r * ldc] = acc[r];
}

template <int R>
void row_block(const float* a, sz lda, const float* b, sz ldb, float* c, sz ldc, int j0, int j1,
               int k0, int k1, bool from_zero) {
  int j = j0;
  for (; j + 16 <= j1; j += 16) tile<R, 16>(a, lda, b + j, ldb, c + j, ldc, k0, k1, from_zero);
  for (; j + 8 <= j1; j += 8) tile<R, 8>(a, lda, b + j, ldb, c + j, ldc, k0, k1, from_zero);
  for (; j < j1; ++j) tile1<R>(a, lda, b + j, ldb, c + j, ldc, k0, k1, from_zero);
}

void gemm_nn(int m, int n, int k, const float* a, sz lda, const float* b, sz ldb, bool beta1,
             float* c, sz ldc) {
  if (k == 0) {
    if (!beta1)
      for (int i = 0; i < m; ++i) std::fill(c + sz(i) * ldc, c + sz(i) * ldc + n, 0.0f);
    return;
  }
  for (int j0 = 0; j0 < n; j0 += k_nb) {
    const int j1 = std::min(n, j0 + k_nb);
    for (int k0 = 0; k0 < k; k0 += k_kb) {
      const int k1 = std::min(k, k0 + k_kb);
      const bool from_zero = k0 == 0 && !beta1;
      int i = 0;
      for (; i + 4 <= m; i += 4)
        row_block<4>(a + sz(i) * lda, lda, b, ldb, c + sz(i) * ldc, ldc, j0, j1, k0, k1, from_zero);
      for (; i < m; ++i)
        row_block<1>(a + sz(i) * lda, lda, b, ldb, c + sz(i) * ldc, ldc, j0, j1, k0, k1, from_zero);
    }
  }
}

// Fixed reduction of 8 lanes: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
float lanes_sum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  const __m128 s4 = _mm_add_ps(lo, hi);                         // l0+l4, l1+l5, l2+l6, l3+l7
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));      // (l0+l4)+(l2+l6), ...
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));  // + ((l1+l5)+(l3+l7))
  return _mm_cvtss_f32(s1);
}

// dots of R rows of a with one row of b (length k): out[r].
template <int R>
void dots(const float* a, sz lda, const float* brow, int k, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const int k8 = k / 8 * 8;
  for (int kk = 0; kk < k8; kk += 8) {
    const __m256 bv = _mm256_loadu_ps(brow + kk);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(a + r * lda + kk), bv, acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = lanes_sum(acc[r]);
    for (int kk = k8; kk < k; ++kk) s = std::fma(a[r * lda + kk], brow[kk], s);
    out[r] = s;
  }
}

void gemm_nt(int m, int n, int k, const float* a, sz lda, const float* b, sz ldb, bool beta1,
             float* c, sz ldc) {
  float d[4];
  for (int j0 = 0; j0 < n; j0 += k_jb) {
    const int j1 = std::min(n, j0 + k_jb);
    int i = 0;
    auto put = [&](int rows, int j) {
      for (int r = 0; r < rows; ++r) {
        float& out = c[sz(i + r) * ldc + j];
        out = beta1 ? out + d[r] : d[r];
      }
    };
    for (; i + 4 <= m; i += 4)
      for (int j = j0; j < j1; ++j) {
        dots<4>(a + sz(i) * lda, lda, b + sz(j) * ldb, k, d);
        put(4, j);
      }
    for (; i < m; ++i)
      for (int j = j0; j < j1; ++j) {
        dots<1>(a + sz(i) * lda, lda, b + sz(j) * ldb, k, d);
        put(1, j);
      }
  }
}

}  // namespace

void gemm_invariant(bool trans_b, int m, int n, int k, const float* a, int lda, const float* b,
                    int ldb, float beta, float* c, int ldc) {
  const sz la = lda ? sz(lda) : sz(k), lc = ldc ? sz(ldc) : sz(n);
  const sz lb = ldb ? sz(ldb) : (trans_b ? sz(k) : sz(n));
  const bool beta1 = beta != 0.0f;
  if (trans_b)
    gemm_nt(m, n, k, a, la, b, lb, beta1, c, lc);
  else
    gemm_nn(m, n, k, a, la, b, lb, beta1, c, lc);
}

}  // namespace zf::kernels::cpu
