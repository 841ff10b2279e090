// Batch-invariant GEMM, CPU (see matmul_invariant.hpp for the per-element order).
// Not transposed: up to 8 rows stream b through c (stream_rows); more rows take register tiles
// of 4 rows x 16 columns (8 accumulators); the k loop is cut into blocks that continue each
// element's FMA chain through c, so blocking changes locality, never arithmetic. Row and column
// remainders run the same chain one row / 8 / 1 lanes at a time (a vector FMA lane and std::fma
// round identically).
// Transposed: dots of contiguous rows, 4 rows of a against one row of b at a time (a last row of
// a against 4 rows of b), b in blocks of rows that stay in cache; each dot is 8 lanes over k, a
// fixed tree over the lanes, then the k tail in order.
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

// A few rows (decode): R rows of c [R, n] in columns of k_sb, each element's chain kept in c
// (L1-resident) while the rows of b stream through four at a time, contiguous: the tiles above
// read 64 bytes per row of b at a stride of n, which the prefetchers serve badly (~10 GB/s on 2
// cores against ~20 for a stream). Same chain, so the same bits.
constexpr int k_sb = 2048;  // columns of c per pass (R x 8 KiB)

template <int R>
void stream_rows(const float* a, sz lda, const float* b, sz ldb, float* c, sz ldc, int n, int k,
                 bool beta1) {
  for (int j0 = 0; j0 < n; j0 += k_sb) {
    const int w = std::min(n, j0 + k_sb) - j0, w8 = w / 8 * 8;
    float* c0 = c + j0;
    if (!beta1)
      for (int r = 0; r < R; ++r) std::fill(c0 + r * ldc, c0 + r * ldc + w, 0.0f);
    int kk = 0;
    for (; kk + 4 <= k; kk += 4) {
      const float* b0 = b + sz(kk) * ldb + j0;
      const float *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
      __m256 av[R][4];
      for (int r = 0; r < R; ++r)
        for (int q = 0; q < 4; ++q) av[r][q] = _mm256_broadcast_ss(a + r * lda + kk + q);
      int j = 0;
      for (; j < w8; j += 8) {
        const __m256 w0 = _mm256_loadu_ps(b0 + j), w1 = _mm256_loadu_ps(b1 + j),
                     w2 = _mm256_loadu_ps(b2 + j), w3 = _mm256_loadu_ps(b3 + j);
        for (int r = 0; r < R; ++r) {
          float* cr = c0 + r * ldc + j;
          __m256 s = _mm256_loadu_ps(cr);
          s = _mm256_fmadd_ps(av[r][0], w0, s);
          s = _mm256_fmadd_ps(av[r][1], w1, s);
          s = _mm256_fmadd_ps(av[r][2], w2, s);
          s = _mm256_fmadd_ps(av[r][3], w3, s);
          _mm256_storeu_ps(cr, s);
        }
      }
      for (; j < w; ++j)
        for (int r = 0; r < R; ++r) {
          float& s = c0[r * ldc + j];
          const float* ar = a + r * lda + kk;
          s = std::fma(ar[0], b0[j], s);
          s = std::fma(ar[1], b1[j], s);
          s = std::fma(ar[2], b2[j], s);
          s = std::fma(ar[3], b3[j], s);
        }
    }
    for (; kk < k; ++kk)
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < w; ++j)
          c0[r * ldc + j] = std::fma(a[r * lda + kk], b[sz(kk) * ldb + j0 + j], c0[r * ldc + j]);
  }
}

constexpr int k_stream_rows = 8;  // at most this many rows take stream_rows

void gemm_nn(int m, int n, int k, const float* a, sz lda, const float* b, sz ldb, bool beta1,
             float* c, sz ldc) {
  if (k == 0) {
    if (!beta1)
      for (int i = 0; i < m; ++i) std::fill(c + sz(i) * ldc, c + sz(i) * ldc + n, 0.0f);
    return;
  }
  if (m <= k_stream_rows) {
    switch (m) {
      case 1:
        return stream_rows<1>(a, lda, b, ldb, c, ldc, n, k, beta1);
      case 2:
        return stream_rows<2>(a, lda, b, ldb, c, ldc, n, k, beta1);
      case 3:
        return stream_rows<3>(a, lda, b, ldb, c, ldc, n, k, beta1);
      case 4:
        return stream_rows<4>(a, lda, b, ldb, c, ldc, n, k, beta1);
      case 5:
        return stream_rows<5>(a, lda, b, ldb, c, ldc, n, k, beta1);
      case 6:
        return stream_rows<6>(a, lda, b, ldb, c, ldc, n, k, beta1);
      case 7:
        return stream_rows<7>(a, lda, b, ldb, c, ldc, n, k, beta1);
      default:
        return stream_rows<8>(a, lda, b, ldb, c, ldc, n, k, beta1);
    }
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

// dots of one row of a with 4 rows of b: out[q] = dots<1>(a, b row q), the same operations;
// four independent chains hide the FMA latency a single dot waits on (a decode row's head).
void dots_rows4(const float* a, const float* b, sz ldb, int k, float* out) {
  __m256 acc[4];
  for (int q = 0; q < 4; ++q) acc[q] = _mm256_setzero_ps();
  const int k8 = k / 8 * 8;
  for (int kk = 0; kk < k8; kk += 8) {
    const __m256 av = _mm256_loadu_ps(a + kk);
    for (int q = 0; q < 4; ++q)
      acc[q] = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + q * ldb + kk), acc[q]);
  }
  for (int q = 0; q < 4; ++q) {
    float s = lanes_sum(acc[q]);
    for (int kk = k8; kk < k; ++kk) s = std::fma(a[kk], b[q * ldb + kk], s);
    out[q] = s;
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
    for (; i < m; ++i) {
      int j = j0;
      for (; j + 4 <= j1; j += 4) {
        dots_rows4(a + sz(i) * lda, b + sz(j) * ldb, ldb, k, d);
        for (int q = 0; q < 4; ++q) {
          float& out = c[sz(i) * ldc + j + q];
          out = beta1 ? out + d[q] : d[q];
        }
      }
      for (; j < j1; ++j) {
        dots<1>(a + sz(i) * lda, lda, b + sz(j) * ldb, k, d);
        put(1, j);
      }
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
