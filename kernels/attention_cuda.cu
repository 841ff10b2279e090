// Attention family, CUDA twin of attention_cpu.cpp with the same contract: causal multi-head
// (or grouped-query) attention of tq queries at absolute positions offset.. against tk = offset +
// tq keys, q/k/v/out/dq/dk/dv read and written through their row strides, only the head columns
// touched. All pointers are GPU memory; work is queued on current_stream() and nothing waits.
// Design: every product is a 64 x 64 output tile per block of 256 threads (a 4 x 4 micro-tile
// each), its operands staged through shared memory 16 reduction steps at a time.
// - forward: (1) a block per (head, 64-query tile) computes the score tiles of its rows key tile
//   by key tile up to the causal limit, writes them (scaled) into att while each thread keeps an
//   online max/sum of its entries; the 16 per-thread partials of a row are combined in a fixed
//   order, and a second sweep over the same entries (each thread re-reads what it wrote) turns
//   them into probabilities; keys past the last causal tile are written 0. (2) out = att @ v per
//   (head, query tile, 64 columns of head_dim).
// - backward: (1) per (head, query tile): datt = dout @ v^T tile by tile with the per-row
//   sum(att * datt) partials, then dpre = att * (datt - sum) in place; (2) dq = scale dpre @ k;
//   (3) per (kv head, 64-key tile, columns): dv = sum over the group's query heads, in head order,
//   of att^T @ dout and dk = scale * the same of dpre^T @ q, over the queries that see the keys.
//   One block owns each dk/dv element: deterministic, no atomics, OVERWRITTEN.
// Numerics: fp32 with explicit fmaf in ascending reduction order; expf. Against the cpu kernel
// (GEMM library sums, Cephes exp, double softmax sums) the results differ by rounding only:
// relative errors ~1e-6 on the probabilities and outputs (tests use rtol 1e-5 / 1e-4).
// Masked att/datt entries are written exactly 0 over every tile the later products read, so the
// products may run over whole tiles (0 * finite adds nothing).
#include <cmath>
#include <cstddef>

#include "kernels/attention.hpp"
#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation

#if defined(__CUDACC__)
#define ZF_ATT_UNROLL _Pragma("unroll")
#else
#define ZF_ATT_UNROLL
#endif

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr int kTile = 64;        // rows and columns of a block's output tile
constexpr int kDepth = 16;       // reduction steps staged in shared memory at a time
constexpr int kLds = kTile + 4;  // staged row stride: float4-aligned, stores at most 2-way
constexpr int kThreads = 256;    // 16 x 16 threads: ty = tid / 16 owns rows 4ty.., tx cols 4tx..
constexpr int kPartLd = 17;      // [row][tx] partials of a row, padded

struct alignas(16) f32x4 {
  float x, y, z, w;
};
// One staged operand block, dst[k][r]; aligned for the float4 reads of the micro-tiles.
struct alignas(16) staged {
  float v[kDepth][kLds];
};

ZF_HD int imin(int a, int b) {
  return a < b ? a : b;
}
ZF_HD int imax(int a, int b) {
  return a > b ? a : b;
}
ZF_HD int tiles(int n) {
  return (n + kTile - 1) / kTile;
}

// Query heads per kv head.
ZF_HD int kv_group(const attention_shape& s) {
  return s.n_kv_head > 0 ? s.n_head / s.n_kv_head : 1;
}

// Stages a kTile x kDepth operand block into dst[k][r] (r: output row or column, k: reduction
// index). Element (r, k) is p[r * ld + k] (KContig) or p[k * ld + r]; consecutive threads read
// consecutive addresses either way. Outside r < r_lim, k < k_lim: 0.
template <bool KContig>
__device__ void stage(float (*dst)[kLds], const float* __restrict__ p, int ld, int r0, int r_lim,
                      int k0, int k_lim) {
  for (int e = threadIdx.x; e < kTile * kDepth; e += kThreads) {
    const int r = KContig ? e / kDepth : e % kTile;
    const int k = KContig ? e % kDepth : e / kTile;
    const int gr = r0 + r, gk = k0 + k;
    float x = 0.0f;
    if (gr < r_lim && gk < k_lim) {
      x = KContig ? p[static_cast<std::size_t>(gr) * ld + gk]
                  : p[static_cast<std::size_t>(gk) * ld + gr];
    }
    dst[k][r] = x;
  }
}

// acc[a][b] += sum over k in [k_begin, k_end), ascending, of A(m0 + 4ty + a, k) B(n0 + 4tx + b, k)
// with A's rows below m_lim and B's below n_lim (see stage for the layouts). Every thread of the
// block must call it (barriers).
template <bool AK, bool BK>
__device__ void tile_product(float (&acc)[4][4], const float* a, int lda, int m0, int m_lim,
                             const float* b, int ldb, int n0, int n_lim, int k_begin, int k_end) {
  __shared__ staged as, bs;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  for (int k0 = k_begin; k0 < k_end; k0 += kDepth) {
    stage<AK>(as.v, a, lda, m0, m_lim, k0, k_end);
    stage<BK>(bs.v, b, ldb, n0, n_lim, k0, k_end);
    __syncthreads();
    ZF_ATT_UNROLL
    for (int k = 0; k < kDepth; ++k) {
      const f32x4 x = *reinterpret_cast<const f32x4*>(&as.v[k][4 * ty]);
      const f32x4 y = *reinterpret_cast<const f32x4*>(&bs.v[k][4 * tx]);
      const float xa[4] = {x.x, x.y, x.z, x.w}, yb[4] = {y.x, y.y, y.z, y.w};
      ZF_ATT_UNROLL
      for (int i = 0; i < 4; ++i) {
        ZF_ATT_UNROLL
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xa[i], yb[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
}

// dst[(m0 + 4ty + a) * ld + n0 + 4tx + b] = alpha * acc[a][b] inside m_lim x n_lim.
__device__ void store_tile(const float (&acc)[4][4], float* dst, int ld, int m0, int m_lim, int n0,
                           int n_lim, float alpha) {
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  for (int a = 0; a < 4; ++a) {
    const int m = m0 + 4 * ty + a;
    if (m >= m_lim) continue;
    for (int b = 0; b < 4; ++b) {
      const int n = n0 + 4 * tx + b;
      if (n < n_lim) dst[static_cast<std::size_t>(m) * ld + n] = alpha * acc[a][b];
    }
  }
}

// Combines the per-thread partials part[row][0..16) of each of the tile's 64 rows in tx order:
// max/sum pairs (softmax statistics: fin = max, fin2 = 1 / sum) or plain sums (part2 null).
__device__ void combine_rows(float (*part)[kPartLd], float (*part2)[kPartLd], float* fin,
                             float* fin2) {
  __syncthreads();
  const int r = threadIdx.x;
  if (r < kTile) {
    if (part2 == nullptr) {
      float sum = 0.0f;
      for (int t = 0; t < 16; ++t) sum += part[r][t];
      fin[r] = sum;
    } else {
      float m = -INFINITY, l = 0.0f;
      for (int t = 0; t < 16; ++t) m = fmaxf(m, part[r][t]);
      for (int t = 0; t < 16; ++t) {
        if (part[r][t] != -INFINITY) l += part2[r][t] * expf(part[r][t] - m);
      }
      fin[r] = m;
      fin2[r] = 1.0f / l;
    }
  }
  __syncthreads();
}

// Block (x: query tile, heaviest first; y: head). att[h] rows i0..i0+63: probabilities of the
// visible keys, 0 elsewhere up to tk. scale = 1/sqrt(head_dim).
__global__ void __launch_bounds__(kThreads)
    forward_softmax_kernel(attention_shape s, const float* q, const float* k, float* att,
                           float scale) {
  __shared__ float part_m[kTile][kPartLd], part_l[kTile][kPartLd];
  __shared__ float fin_m[kTile], fin_inv[kTile];
  const int h = blockIdx.y, i0 = (gridDim.x - 1 - blockIdx.x) * kTile;
  const int i_end = imin(i0 + kTile, s.tq), kv_end = s.offset + i_end;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16, hd = s.head_dim;
  const float* qh = q + static_cast<std::size_t>(h) * hd;
  const float* kh = k + static_cast<std::size_t>(h / kv_group(s)) * hd;
  float* ah = att + static_cast<std::size_t>(h) * s.tq * s.tk;
  float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, l[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // Sweep 1: scaled scores into att (masked 0) and this thread's online max / sum per row.
  for (int j0 = 0; j0 < kv_end; j0 += kTile) {
    float acc[4][4] = {};
    tile_product<true, true>(acc, qh, s.ldq, i0, s.tq, kh, s.ldk, j0, s.tk, 0, hd);
    for (int a = 0; a < 4; ++a) {
      const int i = i0 + 4 * ty + a, visible = s.offset + i + 1;
      if (i >= s.tq) continue;
      float* row = ah + static_cast<std::size_t>(i) * s.tk;
      float x[4], tile_max = -INFINITY;
      for (int b = 0; b < 4; ++b) {
        const int j = j0 + 4 * tx + b;
        x[b] = j < visible ? acc[a][b] * scale : -INFINITY;
        if (j < s.tk) row[j] = j < visible ? x[b] : 0.0f;
        tile_max = fmaxf(tile_max, x[b]);
      }
      if (tile_max == -INFINITY) continue;
      const float nm = fmaxf(m[a], tile_max);
      float sum = l[a] * expf(m[a] - nm);
      for (int b = 0; b < 4; ++b) sum += expf(x[b] - nm);
      m[a] = nm;
      l[a] = sum;
    }
  }
  for (int a = 0; a < 4; ++a) {
    part_m[4 * ty + a][tx] = m[a];
    part_l[4 * ty + a][tx] = l[a];
  }
  combine_rows(part_m, part_l, fin_m, fin_inv);
  // Sweep 2: the entries this thread wrote become probabilities.
  for (int j0 = 0; j0 < kv_end; j0 += kTile) {
    for (int a = 0; a < 4; ++a) {
      const int r = 4 * ty + a, i = i0 + r, visible = s.offset + i + 1;
      if (i >= s.tq) continue;
      float* row = ah + static_cast<std::size_t>(i) * s.tk;
      for (int b = 0; b < 4; ++b) {
        const int j = j0 + 4 * tx + b;
        if (j < visible) row[j] = expf(row[j] - fin_m[r]) * fin_inv[r];
      }
    }
  }
  // Keys past the last tile computed are masked for every row of the tile.
  for (int i = i0; i < i_end; ++i) {
    float* row = ah + static_cast<std::size_t>(i) * s.tk;
    for (int j = tiles(kv_end) * kTile + threadIdx.x; j < s.tk; j += kThreads) row[j] = 0.0f;
  }
}

// Block (x: 64 columns of head_dim, y: query tile, z: head): out_h = att_h @ v_h over the keys up
// to the tile's causal limit (att is 0 past each row's own).
__global__ void __launch_bounds__(kThreads)
    forward_values_kernel(attention_shape s, const float* v, const float* att, float* out) {
  const int d0 = blockIdx.x * kTile, i0 = (gridDim.y - 1 - blockIdx.y) * kTile, h = blockIdx.z;
  const int hd = s.head_dim, kv_end = s.offset + imin(i0 + kTile, s.tq);
  const float* ah = att + static_cast<std::size_t>(h) * s.tq * s.tk;
  const float* vh = v + static_cast<std::size_t>(h / kv_group(s)) * hd;
  float acc[4][4] = {};
  tile_product<true, false>(acc, ah, s.tk, i0, s.tq, vh, s.ldv, d0, hd, 0, kv_end);
  store_tile(acc, out + static_cast<std::size_t>(h) * hd, s.ldo, i0, s.tq, d0, hd, 1.0f);
}

// Block (x: query tile, heaviest first; y: head): datt_h = dout_h @ v_h^T over the visible keys,
// then dpre = att * (datt - sum_j att * datt) in place; masked entries of the tiles computed 0.
__global__ void __launch_bounds__(kThreads)
    backward_softmax_kernel(attention_shape s, const float* v, const float* att, const float* dout,
                            float* datt) {
  __shared__ float part[kTile][kPartLd];
  __shared__ float fin[kTile];
  const int h = blockIdx.y, i0 = (gridDim.x - 1 - blockIdx.x) * kTile;
  const int kv_end = s.offset + imin(i0 + kTile, s.tq);
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16, hd = s.head_dim;
  const std::size_t head = static_cast<std::size_t>(h) * s.tq * s.tk;
  const float* doh = dout + static_cast<std::size_t>(h) * hd;
  const float* vh = v + static_cast<std::size_t>(h / kv_group(s)) * hd;
  float sad[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int j0 = 0; j0 < kv_end; j0 += kTile) {
    float acc[4][4] = {};
    tile_product<true, true>(acc, doh, s.ldo, i0, s.tq, vh, s.ldv, j0, s.tk, 0, hd);
    for (int a = 0; a < 4; ++a) {
      const int i = i0 + 4 * ty + a, visible = s.offset + i + 1;
      if (i >= s.tq) continue;
      const float* arow = att + head + static_cast<std::size_t>(i) * s.tk;
      float* drow = datt + head + static_cast<std::size_t>(i) * s.tk;
      for (int b = 0; b < 4; ++b) {
        const int j = j0 + 4 * tx + b;
        if (j >= s.tk) continue;
        drow[j] = j < visible ? acc[a][b] : 0.0f;
        if (j < visible) sad[a] = fmaf(arow[j], acc[a][b], sad[a]);
      }
    }
  }
  for (int a = 0; a < 4; ++a) part[4 * ty + a][tx] = sad[a];
  combine_rows(part, nullptr, fin, nullptr);
  for (int j0 = 0; j0 < kv_end; j0 += kTile) {
    for (int a = 0; a < 4; ++a) {
      const int r = 4 * ty + a, i = i0 + r, visible = s.offset + i + 1;
      if (i >= s.tq) continue;
      const float* arow = att + head + static_cast<std::size_t>(i) * s.tk;
      float* drow = datt + head + static_cast<std::size_t>(i) * s.tk;
      for (int b = 0; b < 4; ++b) {
        const int j = j0 + 4 * tx + b;
        if (j < visible) drow[j] = arow[j] * (drow[j] - fin[r]);
      }
    }
  }
}

// Block (x: 64 columns of head_dim, y: query tile, z: head): dq_h = scale * dpre_h @ k_h.
__global__ void __launch_bounds__(kThreads)
    backward_query_kernel(attention_shape s, const float* k, const float* datt, float* dq,
                          float scale) {
  const int d0 = blockIdx.x * kTile, i0 = (gridDim.y - 1 - blockIdx.y) * kTile, h = blockIdx.z;
  const int hd = s.head_dim, kv_end = s.offset + imin(i0 + kTile, s.tq);
  const float* dh = datt + static_cast<std::size_t>(h) * s.tq * s.tk;
  const float* kh = k + static_cast<std::size_t>(h / kv_group(s)) * hd;
  float acc[4][4] = {};
  tile_product<true, false>(acc, dh, s.tk, i0, s.tq, kh, s.ldk, d0, hd, 0, kv_end);
  store_tile(acc, dq + static_cast<std::size_t>(h) * hd, s.ldq, i0, s.tq, d0, hd, scale);
}

// Block (x: 64 columns of head_dim, y: key tile, z: 2 * kv head + (0: dv, 1: dk)):
// dv_g = sum over the group's heads h (in order) of att_h^T @ dout_h, dk_g = scale * the same of
// dpre_h^T @ q_h; keys j0.. are seen by queries i >= j0 - offset only.
__global__ void __launch_bounds__(kThreads)
    backward_kv_kernel(attention_shape s, const float* q, const float* att, const float* dout,
                       const float* datt, float* dk, float* dv, float scale) {
  const int d0 = blockIdx.x * kTile, j0 = blockIdx.y * kTile, g = blockIdx.z / 2;
  const bool keys = blockIdx.z % 2 == 1;
  const int hd = s.head_dim, group = kv_group(s), i_begin = imax(0, j0 - s.offset);
  float acc[4][4] = {};
  for (int h = g * group; h < (g + 1) * group; ++h) {
    const float* p = (keys ? datt : att) + static_cast<std::size_t>(h) * s.tq * s.tk;
    const float* x = (keys ? q : dout) + static_cast<std::size_t>(h) * hd;
    tile_product<false, false>(acc, p, s.tk, j0, s.tk, x, keys ? s.ldq : s.ldo, d0, hd, i_begin,
                               s.tq);
  }
  const std::size_t col = static_cast<std::size_t>(g) * hd;
  if (keys) {
    store_tile(acc, dk + col, s.ldk, j0, s.tk, d0, hd, scale);
  } else {
    store_tile(acc, dv + col, s.ldv, j0, s.tk, d0, hd, 1.0f);
  }
}

bool empty(const attention_shape& s) {
  return s.tq <= 0 || s.tk <= 0 || s.n_head <= 0 || s.head_dim <= 0;
}

}  // namespace

// q: [tq, ldq], k: [tk, ldk], v: [tk, ldv] -> out: [tq, ldo]; att: [n_head, tq, tk].
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att) {
  if (empty(s)) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const unsigned qt = static_cast<unsigned>(tiles(s.tq));
  ZF_LAUNCH(forward_softmax_kernel, dim3(qt, s.n_head), kThreads, 0)(s, q, k, att, scale);
  check_launch("attention_forward scores");
  ZF_LAUNCH(forward_values_kernel, dim3(tiles(s.head_dim), qt, s.n_head), kThreads, 0)
  (s, v, att, out);
  check_launch("attention_forward values");
}

// dout: [tq, ldo]; att: [n_head, tq, tk] from the forward; datt: [n_head, tq, tk] scratch.
// dq, dk, dv (strides ldq, ldk, ldv) overwritten in their head columns (dk/dv: n_kv_head heads).
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv) {
  if (empty(s)) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const unsigned qt = static_cast<unsigned>(tiles(s.tq)), dt = tiles(s.head_dim);
  const unsigned n_kv = static_cast<unsigned>(s.n_head / kv_group(s));
  ZF_LAUNCH(backward_softmax_kernel, dim3(qt, s.n_head), kThreads, 0)(s, v, att, dout, datt);
  check_launch("attention_backward softmax");
  ZF_LAUNCH(backward_query_kernel, dim3(dt, qt, s.n_head), kThreads, 0)(s, k, datt, dq, scale);
  check_launch("attention_backward dq");
  ZF_LAUNCH(backward_kv_kernel, dim3(dt, tiles(s.tk), 2 * n_kv), kThreads, 0)
  (s, q, att, dout, datt, dk, dv, scale);
  check_launch("attention_backward dk dv");
}

}  // namespace zf::kernels::ZF_CUDA_NS
