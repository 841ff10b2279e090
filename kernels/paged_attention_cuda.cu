// Paged attention, CUDA twin of paged_attention_cpu.cpp with the same contract: tq query rows of
// one sequence at positions start.. against its cached K/V rows 0..start+tq-1, which live in
// blocks of a pool (fp32, or bf16 widened exactly by bf16_to_f32) found through the block table;
// GQA; heads [head_begin, head_end) only. q, out, the pools, the table and scratch are GPU memory;
// work is queued on current_stream() and nothing waits.
// Design (decode is the hot path): every row takes the same kernel, whatever tq.
// - A block per (split of kChunk keys, kv head, tile of kRows query rows) reads its keys straight
//   from the pool: thread t owns key c0 + t and computes its dot with every query vector (row,
//   head of the group) of the block, the K row read once for all of them; a softmax per vector
//   over the chunk (8 lanes each); then the value rows accumulated per head_dim column, V rows
//   read once (coalesced) for all vectors. A row whose context fits one split writes out = o / l
//   directly; longer ones write (o, max, sum) partials into scratch and a second kernel combines
//   the splits of each (row, head) in split order.
// - A row's splits, their key ranges and every reduction order depend only on its position and
//   the shape: a row gives the same bits alone, in a chunk or with any head range (so
//   `direct_only`, the batch-invariant mode, needs nothing more).
// Numerics: fp32, explicit fmaf in ascending key / dimension order, expf; the split softmax
// rescales partial sums by exp(m_s - m). Against the cpu kernel (vectorised dots, Cephes exp,
// double sums, normalised probabilities; GEMMs for tq > 4) results differ by rounding only,
// ~1e-6 relative (tests use rtol 1e-5).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/paged_attention.hpp"

#if defined(__CUDACC__)
#define ZF_PA_UNROLL _Pragma("unroll")
#else
#define ZF_PA_UNROLL
#endif

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = kThreads;          // keys per split: one per thread in the scores
constexpr int kRows = paged_direct_rows;  // query rows per block
constexpr int kVecs = 16;                 // query vectors (row, head) per pass
constexpr int kLanesPerVec = kThreads / kVecs;
constexpr int kScoreLd = kChunk + 8;  // score rows padded: the softmax lanes hit 32 banks
constexpr int kQueryFloats = 4096;    // shared floats for the query vectors of a pass

struct alignas(16) f32x4 {
  float x, y, z, w;
};
struct alignas(8) bf16x4 {
  std::uint16_t x, y, z, w;
};

ZF_HD int imin(int a, int b) {
  return a < b ? a : b;
}
ZF_HD int imax(int a, int b) {
  return a > b ? a : b;
}
ZF_HD int splits_of(int n) {
  return (n + kChunk - 1) / kChunk;
}
ZF_HD float widen(float x) {
  return x;
}
ZF_HD float widen(std::uint16_t h) {
  return bf16_to_f32(h);
}
ZF_HD void load4(const float* p, float (&o)[4]) {
  const f32x4 v = *reinterpret_cast<const f32x4*>(p);
  o[0] = v.x;
  o[1] = v.y;
  o[2] = v.z;
  o[3] = v.w;
}
ZF_HD void load4(const std::uint16_t* p, float (&o)[4]) {
  const bf16x4 v = *reinterpret_cast<const bf16x4*>(p);
  o[0] = bf16_to_f32(v.x);
  o[1] = bf16_to_f32(v.y);
  o[2] = bf16_to_f32(v.z);
  o[3] = bf16_to_f32(v.w);
}

// What every block of a call shares.
struct paged_args {
  paged_shape s;
  const int* blocks;
  int block_size, kv_dim;
  const float* q;
  float* out;
  float* part;  // [tq][n_head][max_splits][head_dim + 2]: o, max, sum per split
  int group, kv_begin, head_begin, max_splits;
  int vecs;            // query vectors per pass (kVecs, fewer for a large head_dim)
  int d_span, slices;  // values: thread t -> column t % d_span of key slice t / d_span
  float scale;
  bool vec4;  // K rows and q vectors 4-element aligned: vector loads
};

// The query vectors of a block: vector v is row first + v / group, head g * group + v % group.
struct block_vecs {
  int g, c0, first, v0, nv;
  ZF_HD int row(const paged_args& a, int v) const { return first + (v0 + v) / a.group; }
  ZF_HD int head(const paged_args& a, int v) const { return g * a.group + (v0 + v) % a.group; }
  // Keys of this split vector v sees: [c0, lim).
  ZF_HD int lim(const paged_args& a, int v) const {
    return imin(c0 + kChunk, a.s.start + row(a, v) + 1);
  }
};

// Element offset of key pos's row, kv head g's columns, in either pool (K and V share a layout).
__device__ std::size_t pool_offset(const paged_args& a, int pos, int g) {
  const std::size_t b = static_cast<std::size_t>(a.blocks[pos / a.block_size]);
  return (b * a.block_size + pos % a.block_size) * a.kv_dim +
         static_cast<std::size_t>(g) * a.s.head_dim;
}

// qs[v][d] = q of vector v (pass-local v < nv).
__device__ void load_queries(const paged_args& a, const block_vecs& b, float* qs) {
  const int hd = a.s.head_dim;
  for (int e = threadIdx.x; e < b.nv * hd; e += kThreads) {
    const int v = e / hd, d = e % hd;
    qs[e] = a.q[static_cast<std::size_t>(b.row(a, v)) * a.s.ldq +
                static_cast<std::size_t>(b.head(a, v)) * hd + d];
  }
}

// sc[v][t] = scale * q_v . K[c0 + t] for the keys vector v sees, -inf for the others.
template <class T>
__device__ void chunk_scores(const paged_args& a, const block_vecs& b, const T* kpool,
                             const std::size_t* row_off, const float* qs, float* sc) {
  const int hd = a.s.head_dim, j = b.c0 + threadIdx.x;
  float acc[kVecs];
  ZF_PA_UNROLL
  for (int v = 0; v < kVecs; ++v) acc[v] = 0.0f;
  if (j < b.lim(a, b.nv - 1)) {  // the last vector's row sees the most keys
    const T* kr = kpool + row_off[threadIdx.x];
    if (a.vec4) {
      for (int d = 0; d < hd; d += 4) {
        float x[4];
        load4(kr + d, x);
        ZF_PA_UNROLL
        for (int v = 0; v < kVecs; ++v) {
          if (v >= b.nv) break;
          float y[4];
          load4(qs + v * hd + d, y);
          acc[v] = fmaf(y[0], x[0], acc[v]);
          acc[v] = fmaf(y[1], x[1], acc[v]);
          acc[v] = fmaf(y[2], x[2], acc[v]);
          acc[v] = fmaf(y[3], x[3], acc[v]);
        }
      }
    } else {
      for (int d = 0; d < hd; ++d) {
        const float x = widen(kr[d]);
        ZF_PA_UNROLL
        for (int v = 0; v < kVecs; ++v) {
          if (v >= b.nv) break;
          acc[v] = fmaf(qs[v * hd + d], x, acc[v]);
        }
      }
    }
  }
  ZF_PA_UNROLL
  for (int v = 0; v < kVecs; ++v) {
    if (v >= b.nv) break;
    sc[v * kScoreLd + threadIdx.x] = j < b.lim(a, v) ? a.scale * acc[v] : -INFINITY;
  }
}

// Per vector: m = max of its scores, sc <- exp(sc - m), l = sum; 8 lanes per vector, each over
// keys u, u + 8, ..., then a fixed butterfly. stat[v] = m, stat[kVecs + v] = l.
__device__ void chunk_softmax(const block_vecs& b, float* sc, float* stat) {
  const int v = threadIdx.x / kLanesPerVec, u = threadIdx.x % kLanesPerVec;
  const bool live = v < b.nv;
  float* row = sc + v * kScoreLd;
  float m = -INFINITY;
  if (live) {
    for (int c = u; c < kChunk; c += kLanesPerVec) m = fmaxf(m, row[c]);
  }
  for (int o = kLanesPerVec / 2; o > 0; o >>= 1)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o, kLanesPerVec));
  float l = 0.0f;
  if (live) {
    for (int c = u; c < kChunk; c += kLanesPerVec) {
      const float p = expf(row[c] - m);  // masked: exp(-inf) = 0
      row[c] = p;
      l += p;
    }
  }
  for (int o = kLanesPerVec / 2; o > 0; o >>= 1)
    l += __shfl_xor_sync(0xffffffffu, l, o, kLanesPerVec);
  if (live && u == 0) {
    stat[v] = m;
    stat[kVecs + v] = l;
  }
}

// o_v[d] = sum over the keys v sees, ascending within each slice, slices summed in order; then
// out = o / l (one split) or the split's partial (o, m, l). red: [slices][kVecs][d_span].
template <class T>
__device__ void chunk_values(const paged_args& a, const block_vecs& b, int split, const T* vpool,
                             const std::size_t* row_off, const float* sc, const float* stat,
                             float* red) {
  const int hd = a.s.head_dim, t = threadIdx.x, sl = t / a.d_span, dd = t % a.d_span;
  const int c_end = b.lim(a, b.nv - 1);
  for (int d0 = 0; d0 < hd; d0 += a.d_span) {
    const int d = d0 + dd;
    const bool live = sl < a.slices && d < hd;
    float acc[kVecs];
    ZF_PA_UNROLL
    for (int v = 0; v < kVecs; ++v) acc[v] = 0.0f;
    if (live) {
      for (int j = b.c0 + sl; j < c_end; j += a.slices) {
        const float x = widen(vpool[row_off[j - b.c0] + d]);
        ZF_PA_UNROLL
        for (int v = 0; v < kVecs; ++v) {
          if (v >= b.nv) break;
          if (j < b.lim(a, v)) acc[v] = fmaf(sc[v * kScoreLd + (j - b.c0)], x, acc[v]);
        }
      }
    }
    if (a.slices > 1) {
      if (live) {
        ZF_PA_UNROLL
        for (int v = 0; v < kVecs; ++v) {
          if (v >= b.nv) break;
          red[(sl * kVecs + v) * a.d_span + dd] = acc[v];
        }
      }
      __syncthreads();
      if (live && sl == 0) {
        ZF_PA_UNROLL
        for (int v = 0; v < kVecs; ++v) {
          if (v >= b.nv) break;
          float o = red[v * a.d_span + dd];
          for (int k = 1; k < a.slices; ++k) o += red[(k * kVecs + v) * a.d_span + dd];
          acc[v] = o;
        }
      }
      __syncthreads();
    }
    if (!live || sl != 0) continue;
    ZF_PA_UNROLL
    for (int v = 0; v < kVecs; ++v) {
      if (v >= b.nv) break;
      const int r = b.row(a, v), h = b.head(a, v);
      if (splits_of(a.s.start + r + 1) == 1) {
        a.out[static_cast<std::size_t>(r) * a.s.ldo + static_cast<std::size_t>(h) * hd + d] =
            acc[v] / stat[kVecs + v];
        continue;
      }
      float* p = a.part +
                 ((static_cast<std::size_t>(r) * a.s.n_head + h) * a.max_splits + split) * (hd + 2);
      p[d] = acc[v];
      if (d == 0) {
        p[hd] = stat[v];
        p[hd + 1] = stat[kVecs + v];
      }
    }
  }
}

// Block (x: split, y: kv head - kv_begin, z: row tile). Dynamic shared memory: qs [vecs][hd],
// sc [kVecs][kScoreLd], stat [2 kVecs], red [slices][kVecs][d_span].
template <class T>
__global__ void __launch_bounds__(kThreads)
    paged_kernel(paged_args a, const T* kpool, const T* vpool) {
  ZF_SHARED_DYNAMIC(float, smem);
  const int split = blockIdx.x, r0 = blockIdx.z * kRows, r1 = imin(r0 + kRows, a.s.tq);
  block_vecs b{};
  b.g = a.kv_begin + blockIdx.y;
  b.c0 = split * kChunk;
  b.first = imax(r0, b.c0 - a.s.start);  // rows r see keys < start + r + 1
  if (b.first >= r1) return;             // the whole block: no row of the tile reaches c0
  const int nvec = (r1 - b.first) * a.group;
  // The pool offsets of the split's keys, looked up once (the first pass's barrier publishes them).
  __shared__ std::size_t row_off[kChunk];
  const int key = b.c0 + static_cast<int>(threadIdx.x);
  if (key < a.s.start + r1) row_off[threadIdx.x] = pool_offset(a, key, b.g);
  float* qs = smem;
  float* sc = qs + a.vecs * a.s.head_dim;
  float* stat = sc + kVecs * kScoreLd;
  float* red = stat + 2 * kVecs;
  for (b.v0 = 0; b.v0 < nvec; b.v0 += a.vecs) {
    b.nv = imin(a.vecs, nvec - b.v0);
    load_queries(a, b, qs);
    __syncthreads();
    chunk_scores(a, b, kpool, row_off, qs, sc);
    __syncthreads();
    chunk_softmax(b, sc, stat);
    __syncthreads();
    chunk_values(a, b, split, vpool, row_off, sc, stat, red);
    __syncthreads();
  }
}

// Block (x: head - head_begin, y: row): out = sum_s o_s exp(m_s - m) / sum_s l_s exp(m_s - m)
// over the row's splits in order, m their max; rows of one split were written already.
__global__ void __launch_bounds__(kThreads) combine_kernel(paged_args a) {
  const int h = a.head_begin + blockIdx.x, r = blockIdx.y, hd = a.s.head_dim;
  const int ns = splits_of(a.s.start + r + 1);
  if (ns == 1) return;
  const std::size_t stride = static_cast<std::size_t>(hd) + 2;
  const float* p = a.part + (static_cast<std::size_t>(r) * a.s.n_head + h) * a.max_splits * stride;
  float m = -INFINITY;
  for (int k = 0; k < ns; ++k) m = fmaxf(m, p[k * stride + hd]);
  float l = 0.0f;
  for (int k = 0; k < ns; ++k) l = fmaf(p[k * stride + hd + 1], expf(p[k * stride + hd] - m), l);
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    float o = 0.0f;
    for (int k = 0; k < ns; ++k) o = fmaf(p[k * stride + d], expf(p[k * stride + hd] - m), o);
    a.out[static_cast<std::size_t>(r) * a.s.ldo + static_cast<std::size_t>(h) * hd + d] = o / l;
  }
}

bool aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// The kernel over fp32 or bf16 pools.
template <class T>
void launch(const paged_args& a, const T* kpool, const T* vpool, unsigned kv_heads) {
  const int hd = a.s.head_dim;
  const std::size_t smem =
      sizeof(float) * (static_cast<std::size_t>(a.vecs) * hd + kVecs * kScoreLd + 2 * kVecs +
                       static_cast<std::size_t>(a.slices) * kVecs * a.d_span);
  const dim3 grid(a.max_splits, kv_heads, (a.s.tq + kRows - 1) / kRows);
  ZF_LAUNCH(paged_kernel<T>, grid, kThreads, smem)(a, kpool, vpool);
}

// One thread per (row, column): K and V of row r into slot slot[r].
__global__ void kv_write_kernel(const float* k_src, const float* v_src, int ld, std::size_t n,
                                const int* slot, std::size_t kv_dim, float* k, float* v,
                                std::uint16_t* k16, std::uint16_t* v16) {
  const std::size_t total = n * kv_dim, stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const std::size_t r = i / kv_dim, j = i % kv_dim;
    const std::size_t src = r * static_cast<std::size_t>(ld) + j;
    const std::size_t dst = static_cast<std::size_t>(slot[r]) * kv_dim + j;
    if (k16) {
      k16[dst] = f32_to_bf16(k_src[src]);
      v16[dst] = f32_to_bf16(v_src[src]);
    } else {
      k[dst] = k_src[src];
      v[dst] = v_src[src];
    }
  }
}

}  // namespace

void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16) {
  const std::size_t total = static_cast<std::size_t>(n) * static_cast<std::size_t>(kv_dim);
  if (total == 0) return;
  ZF_LAUNCH(kv_write_kernel, grid_for(total, 256, 4096), 256, 0)
  (k_src, v_src, ld, static_cast<std::size_t>(n), slot, static_cast<std::size_t>(kv_dim), k, v, k16,
   v16);
  check_launch("paged_kv_write");
}

// Floats of scratch: the split partials of every (row, head), (head_dim + 2) each.
long paged_attention_scratch(const paged_shape& s) {
  return static_cast<long>(s.tq) * s.n_head * splits_of(s.start + s.tq) * (s.head_dim + 2);
}

// q: [tq, ldq] -> out: [tq, ldo]; every row by the same kernel, so direct_only changes nothing.
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch, bool /*direct_only*/) {
  const int group = s.n_kv_head > 0 ? s.n_head / s.n_kv_head : 0;
  if (s.head_end != 0 && (s.head_begin < 0 || s.head_end > s.n_head || s.head_begin >= s.head_end ||
                          group < 1 || s.head_begin % group != 0 || s.head_end % group != 0))
    throw std::invalid_argument("paged_attention: heads [" + std::to_string(s.head_begin) + ", " +
                                std::to_string(s.head_end) + ") are not whole kv-head groups of " +
                                std::to_string(s.n_head) + " heads");
  if (s.tq <= 0 || group < 1 || s.head_dim <= 0) return;
  const int h0 = s.head_end ? s.head_begin : 0, h1 = s.head_end ? s.head_end : s.n_head;
  const int hd = s.head_dim;
  paged_args a{};
  a.s = s;
  a.blocks = kv.blocks;
  a.block_size = kv.block_size;
  a.kv_dim = kv.kv_dim;
  a.q = q;
  a.out = out;
  a.part = scratch;
  a.group = group;
  a.kv_begin = h0 / group;
  a.head_begin = h0;
  a.max_splits = splits_of(s.start + s.tq);
  a.vecs = imin(kVecs, imax(1, kQueryFloats / hd));
  a.d_span = imin(hd, kThreads);
  a.slices = kThreads / a.d_span;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const bool bf = kv.k16 != nullptr;
  const std::size_t elem = bf ? sizeof(std::uint16_t) : sizeof(float);
  a.vec4 = hd % 4 == 0 && kv.kv_dim % 4 == 0 &&
           aligned(bf ? static_cast<const void*>(kv.k16) : kv.k, 4 * elem);
  const unsigned kv_heads = static_cast<unsigned>((h1 - h0) / group);
  if (bf) {
    launch(a, kv.k16, kv.v16, kv_heads);
  } else {
    launch(a, kv.k, kv.v, kv_heads);
  }
  check_launch("paged_attention");
  if (a.max_splits > 1) {
    ZF_LAUNCH(combine_kernel, dim3(h1 - h0, s.tq), kThreads, 0)(a);
    check_launch("paged_attention combine");
  }
}

}  // namespace zf::kernels::ZF_CUDA_NS
