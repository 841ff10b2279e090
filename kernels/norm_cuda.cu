// Norm family, CUDA twin of norm_cpu.cpp with the same contracts (GPU pointers, queued on
// current_stream(), nothing waits). Each element goes through the cpu kernel's operations
// (centred LayerNorm, mean taken relative to x[0], rstd = 1 / sqrt(var + eps)); only the order of
// the row sums differs (lanes of a warp, then a butterfly), so results agree with the cpu kernel
// to a few float ulp of the row statistics.
// Invariants:
// - Forward and the backward's dx: one warp per row (rows are model-width: 768..8192 floats), row
//   sums by xor-butterfly shuffles, so every lane holds the same bits of mean / rstd. 16-byte
//   loads and stores when c % 4 == 0 and every pointer is 16-byte aligned, scalar otherwise.
// - dgamma / dbeta are column sums over the n rows, done deterministically (no float atomics):
//   block b of the backward owns rows [b * R, (b + 1) * R) and, after its rows' dx, writes its
//   per-column partial sums (rows summed in order) to scratch; a second kernel adds the partials
//   in chunk order and ADDs the total into dgamma / dbeta. R depends on n only, so the same input
//   gives the same bits every run. A single chunk (n <= R) adds straight into the outputs.
#include <cstdint>

#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/norm.hpp"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kRowWarps = 4;  // rows per block (one warp each): 256 blocks at n = 1024
constexpr unsigned kRowBlock = kRowWarps * kWarp;
constexpr int kMaxChunks = 512;   // backward: at most this many row chunks (blocks, partials)
constexpr int kMinChunkRows = 4;  // ... of at least this many rows (one per warp)
constexpr unsigned kFinCols = 32, kFinRows = 16;  // finalize block: 32 columns x 16 chunk lanes

// V consecutive floats moved as one access (V = 4: a 16-byte vector load/store).
template <int V>
struct alignas(sizeof(float) * V) pack {
  float v[V];
};
template <int V>
ZF_HD pack<V> load(const float* p) {
  return *reinterpret_cast<const pack<V>*>(p);
}
template <int V>
ZF_HD void store(float* p, const pack<V>& a) {
  *reinterpret_cast<pack<V>*>(p) = a;
}

bool aligned16(const void* p) {
  return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// Sum over the 32 lanes; every lane gets the same bits (a + b == b + a at each butterfly step).
__device__ __forceinline__ float warp_sum(float s) {
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// x, y: [n, c]; gamma, beta: [c]; mean, rstd: [n] or nullptr. Warp w of block b: row b*4 + w.
template <int V>
__global__ void __launch_bounds__(kRowBlock)
    layernorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                             const float* __restrict__ beta, float* __restrict__ y,
                             float* __restrict__ mean, float* __restrict__ rstd, int n, int c,
                             float eps) {
  const int row = static_cast<int>(blockIdx.x * kRowWarps + threadIdx.x / kWarp);
  if (row >= n) return;  // the whole warp: no block barrier follows
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const std::size_t off = static_cast<std::size_t>(row) * c;
  const float* xr = x + off;
  float* yr = y + off;
  // Mean relative to x[0], as the cpu kernel (a large common offset keeps its precision).
  const float x0 = xr[0];
  float s = 0.0f;
  for (int j = lane * V; j < c; j += kWarp * V) {
    const pack<V> a = load<V>(xr + j);
    for (int k = 0; k < V; ++k) s += a.v[k] - x0;
  }
  const float mu = x0 + warp_sum(s) / static_cast<float>(c);
  float q = 0.0f;
  for (int j = lane * V; j < c; j += kWarp * V) {
    const pack<V> a = load<V>(xr + j);
    for (int k = 0; k < V; ++k) q += (a.v[k] - mu) * (a.v[k] - mu);
  }
  const float var = warp_sum(q) / static_cast<float>(c);
  const float rs = 1.0f / sqrtf(var + eps);
  for (int j = lane * V; j < c; j += kWarp * V) {
    const pack<V> a = load<V>(xr + j), g = load<V>(gamma + j), b = load<V>(beta + j);
    pack<V> o;
    for (int k = 0; k < V; ++k) o.v[k] = ((a.v[k] - mu) * rs) * g.v[k] + b.v[k];
    store<V>(yr + j, o);
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = mu;
    if (rstd != nullptr) rstd[row] = rs;
  }
}

// x, y: [n, c]; gamma: [c]; rstd: [n] or nullptr. y does not depend on whether rstd is kept.
template <int V>
__global__ void __launch_bounds__(kRowBlock)
    rmsnorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                           float* __restrict__ y, float* __restrict__ rstd, int n, int c,
                           float eps) {
  const int row = static_cast<int>(blockIdx.x * kRowWarps + threadIdx.x / kWarp);
  if (row >= n) return;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const std::size_t off = static_cast<std::size_t>(row) * c;
  const float* xr = x + off;
  float* yr = y + off;
  float ss = 0.0f;
  for (int j = lane * V; j < c; j += kWarp * V) {
    const pack<V> a = load<V>(xr + j);
    for (int k = 0; k < V; ++k) ss += a.v[k] * a.v[k];
  }
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(c) + eps);
  for (int j = lane * V; j < c; j += kWarp * V) {
    const pack<V> a = load<V>(xr + j), g = load<V>(gamma + j);
    pack<V> o;
    for (int k = 0; k < V; ++k) o.v[k] = a.v[k] * rs * g.v[k];
    store<V>(yr + j, o);
  }
  if (lane == 0 && rstd != nullptr) rstd[row] = rs;
}

// Block b: rows [b * R, min(n, (b + 1) * R)). dx (accumulated) one warp per row, then the
// block's column sums of dy * xhat (-> gout) and dy (-> bout) over its rows in order.
// x, dy, dx: [n, c]; gamma: [c]; mean, rstd: [n]. gout/bout: [chunks, c] partials, or [c]
// accumulated when accumulate (a single chunk).
template <int V>
__global__ void __launch_bounds__(kRowBlock)
    layernorm_backward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                              const float* __restrict__ mean, const float* __restrict__ rstd,
                              const float* __restrict__ dy, float* __restrict__ dx,
                              float* __restrict__ gout, float* __restrict__ bout, int n, int c,
                              int rows_per_chunk, bool accumulate) {
  const int r0 = static_cast<int>(blockIdx.x) * rows_per_chunk;
  const int r1 = n - r0 < rows_per_chunk ? n : r0 + rows_per_chunk;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int r = r0 + static_cast<int>(threadIdx.x / kWarp); r < r1; r += kRowWarps) {
    const std::size_t off = static_cast<std::size_t>(r) * c;
    const float mu = mean[r], rs = rstd[r];
    // sg = sum(g), sgx = sum(g * xhat) with g = dy * gamma, xhat = (x - mean) * rstd.
    float sg = 0.0f, sgx = 0.0f;
    for (int j = lane * V; j < c; j += kWarp * V) {
      const pack<V> a = load<V>(x + off + j), d = load<V>(dy + off + j), w = load<V>(gamma + j);
      for (int k = 0; k < V; ++k) {
        const float xh = (a.v[k] - mu) * rs, g = d.v[k] * w.v[k];
        sg += g;
        sgx += g * xh;
      }
    }
    const float mg = warp_sum(sg) * inv_c, mgx = warp_sum(sgx) * inv_c;
    // dx += rstd * (g - mean(g) - xhat * mean(g * xhat)).
    for (int j = lane * V; j < c; j += kWarp * V) {
      const pack<V> a = load<V>(x + off + j), d = load<V>(dy + off + j), w = load<V>(gamma + j);
      pack<V> o = load<V>(dx + off + j);
      for (int k = 0; k < V; ++k) {
        const float xh = (a.v[k] - mu) * rs;
        o.v[k] += rs * ((d.v[k] * w.v[k] - mg) - xh * mgx);
      }
      store<V>(dx + off + j, o);
    }
  }
  // Column sums over this chunk's rows (just read: they are in L1/L2), coalesced along c.
  float* gp = accumulate ? gout : gout + static_cast<std::size_t>(blockIdx.x) * c;
  float* bp = accumulate ? bout : bout + static_cast<std::size_t>(blockIdx.x) * c;
  for (int j = static_cast<int>(threadIdx.x); j < c; j += static_cast<int>(blockDim.x)) {
    float sgam = 0.0f, sbet = 0.0f;
    for (int r = r0; r < r1; ++r) {
      const std::size_t o = static_cast<std::size_t>(r) * c + j;
      const float d = dy[o];
      sgam += d * ((x[o] - mean[r]) * rstd[r]);
      sbet += d;
    }
    if (accumulate) {
      gp[j] += sgam;
      bp[j] += sbet;
    } else {
      gp[j] = sgam;
      bp[j] = sbet;
    }
  }
}

// RMSNorm's backward, laid out as layernorm_backward_kernel: dx = rstd * (g - xhat * mean(g *
// xhat)) with xhat = x * rstd, and the chunk's column sums of dy * xhat (-> gout).
template <int V>
__global__ void __launch_bounds__(kRowBlock)
    rmsnorm_backward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                            const float* __restrict__ rstd, const float* __restrict__ dy,
                            float* __restrict__ dx, float* __restrict__ gout, int n, int c,
                            int rows_per_chunk, bool accumulate) {
  const int r0 = static_cast<int>(blockIdx.x) * rows_per_chunk;
  const int r1 = n - r0 < rows_per_chunk ? n : r0 + rows_per_chunk;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int r = r0 + static_cast<int>(threadIdx.x / kWarp); r < r1; r += kRowWarps) {
    const std::size_t off = static_cast<std::size_t>(r) * c;
    const float rs = rstd[r];
    float sgx = 0.0f;
    for (int j = lane * V; j < c; j += kWarp * V) {
      const pack<V> a = load<V>(x + off + j), d = load<V>(dy + off + j), w = load<V>(gamma + j);
      for (int k = 0; k < V; ++k) sgx += d.v[k] * w.v[k] * (a.v[k] * rs);
    }
    const float mgx = warp_sum(sgx) * inv_c;
    for (int j = lane * V; j < c; j += kWarp * V) {
      const pack<V> a = load<V>(x + off + j), d = load<V>(dy + off + j), w = load<V>(gamma + j);
      pack<V> o = load<V>(dx + off + j);
      for (int k = 0; k < V; ++k) o.v[k] += rs * (d.v[k] * w.v[k] - a.v[k] * rs * mgx);
      store<V>(dx + off + j, o);
    }
  }
  float* gp = accumulate ? gout : gout + static_cast<std::size_t>(blockIdx.x) * c;
  for (int j = static_cast<int>(threadIdx.x); j < c; j += static_cast<int>(blockDim.x)) {
    float s = 0.0f;
    for (int r = r0; r < r1; ++r) {
      const std::size_t o = static_cast<std::size_t>(r) * c + j;
      s += dy[o] * (x[o] * rstd[r]);
    }
    if (accumulate) {
      gp[j] += s;
    } else {
      gp[j] = s;
    }
  }
}

// out[blockIdx.y][j] += sum over chunks k (in order of k mod 16, then of the 16 lanes) of
// partial[blockIdx.y][k][j]. partial: [grid.y][chunks, c]; block (32, 16) covers 32 columns.
__global__ void __launch_bounds__(kFinCols* kFinRows)
    column_finalize_kernel(const float* __restrict__ partial, float* __restrict__ out0,
                           float* __restrict__ out1, int chunks, int c) {
  __shared__ float part[kFinRows][kFinCols + 1];
  const int j = static_cast<int>(blockIdx.x * kFinCols + threadIdx.x);
  const float* p = partial + static_cast<std::size_t>(blockIdx.y) * chunks * c;
  float s = 0.0f;
  if (j < c) {
    for (int k = static_cast<int>(threadIdx.y); k < chunks; k += kFinRows) {
      s += p[static_cast<std::size_t>(k) * c + j];
    }
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < c) {
    float t = part[0][threadIdx.x];
    for (unsigned k = 1; k < kFinRows; ++k) t += part[k][threadIdx.x];
    float* out = blockIdx.y == 0 ? out0 : out1;
    out[j] += t;
  }
}

// The backward's row chunking: chunks of R >= 4 rows, at most kMaxChunks of them.
struct chunking {
  int rows, count;
};
chunking chunking_of(int n) {
  int rows = (n + kMaxChunks - 1) / kMaxChunks;
  if (rows < kMinChunkRows) rows = kMinChunkRows;
  return {rows, (n + rows - 1) / rows};
}

// Per-call scratch for the column partials: [k_outputs][chunks, c] floats, or nullptr for one
// chunk. cudaMallocAsync on the stream until a device allocator exists (stream-ordered, so it
// does not synchronise; the pool makes repeated sizes cheap).
float* partials_alloc(const chunking& ch, int c, int k_outputs, const char* what) {
  if (ch.count == 1) return nullptr;
  void* p = nullptr;
  check(cudaMallocAsync(&p, static_cast<std::size_t>(k_outputs) * ch.count * c * sizeof(float),
                        current_stream()),
        what);
  return static_cast<float*>(p);
}

// Adds the partials into out0 (and out1), frees them. Always frees, then reports.
void partials_finish(float* partial, const chunking& ch, int c, float* out0, float* out1,
                     const char* what) {
  if (partial == nullptr) return;
  const dim3 grid((static_cast<unsigned>(c) + kFinCols - 1) / kFinCols, out1 != nullptr ? 2 : 1);
  ZF_LAUNCH(column_finalize_kernel, grid, dim3(kFinCols, kFinRows), 0)
  (partial, out0, out1, ch.count, c);
  const cudaError_t e = cudaGetLastError();
  const cudaError_t f = cudaFreeAsync(partial, current_stream());
  check(e, what);
  check(f, what);
}

unsigned row_blocks(int n) {
  return (static_cast<unsigned>(n) + kRowWarps - 1) / kRowWarps;
}

}  // namespace

// x: [n, c], gamma/beta: [c] -> y: [n, c]; mean, rstd: [n] (optional).
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps) {
  if (n <= 0 || c <= 0) return;
  if (c % 4 == 0 && aligned16(x) && aligned16(gamma) && aligned16(beta) && aligned16(y)) {
    ZF_LAUNCH(layernorm_forward_kernel<4>, row_blocks(n), kRowBlock, 0)
    (x, gamma, beta, y, mean, rstd, n, c, eps);
  } else {
    ZF_LAUNCH(layernorm_forward_kernel<1>, row_blocks(n), kRowBlock, 0)
    (x, gamma, beta, y, mean, rstd, n, c, eps);
  }
  check_launch("layernorm_forward launch");
}

// x, dy: [n, c]; gamma: [c]; mean, rstd: [n]. dx: [n, c] accumulated; dgamma, dbeta: [c]
// accumulated.
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c) {
  if (n <= 0 || c <= 0) return;
  const chunking ch = chunking_of(n);
  float* partial = partials_alloc(ch, c, 2, "layernorm_backward scratch");
  const bool acc = partial == nullptr;
  float* gout = acc ? dgamma : partial;
  float* bout = acc ? dbeta : partial + static_cast<std::size_t>(ch.count) * c;
  if (c % 4 == 0 && aligned16(x) && aligned16(gamma) && aligned16(dy) && aligned16(dx)) {
    ZF_LAUNCH(layernorm_backward_kernel<4>, ch.count, kRowBlock, 0)
    (x, gamma, mean, rstd, dy, dx, gout, bout, n, c, ch.rows, acc);
  } else {
    ZF_LAUNCH(layernorm_backward_kernel<1>, ch.count, kRowBlock, 0)
    (x, gamma, mean, rstd, dy, dx, gout, bout, n, c, ch.rows, acc);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess && partial != nullptr) (void)cudaFreeAsync(partial, current_stream());
  check(e, "layernorm_backward launch");
  partials_finish(partial, ch, c, dgamma, dbeta, "layernorm_backward finalize");
}

// x: [n, c], gamma: [c] -> y: [n, c]; rstd: [n] (optional).
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps) {
  if (n <= 0 || c <= 0) return;
  if (c % 4 == 0 && aligned16(x) && aligned16(gamma) && aligned16(y)) {
    ZF_LAUNCH(rmsnorm_forward_kernel<4>, row_blocks(n), kRowBlock, 0)(x, gamma, y, rstd, n, c, eps);
  } else {
    ZF_LAUNCH(rmsnorm_forward_kernel<1>, row_blocks(n), kRowBlock, 0)(x, gamma, y, rstd, n, c, eps);
  }
  check_launch("rmsnorm_forward launch");
}

// x, dy: [n, c]; gamma: [c]; rstd: [n]. dx: [n, c] accumulated; dgamma: [c] accumulated.
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c) {
  if (n <= 0 || c <= 0) return;
  const chunking ch = chunking_of(n);
  float* partial = partials_alloc(ch, c, 1, "rmsnorm_backward scratch");
  const bool acc = partial == nullptr;
  float* gout = acc ? dgamma : partial;
  if (c % 4 == 0 && aligned16(x) && aligned16(gamma) && aligned16(dy) && aligned16(dx)) {
    ZF_LAUNCH(rmsnorm_backward_kernel<4>, ch.count, kRowBlock, 0)
    (x, gamma, rstd, dy, dx, gout, n, c, ch.rows, acc);
  } else {
    ZF_LAUNCH(rmsnorm_backward_kernel<1>, ch.count, kRowBlock, 0)
    (x, gamma, rstd, dy, dx, gout, n, c, ch.rows, acc);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess && partial != nullptr) (void)cudaFreeAsync(partial, current_stream());
  check(e, "rmsnorm_backward launch");
  partials_finish(partial, ch, c, dgamma, nullptr, "rmsnorm_backward finalize");
}

}  // namespace zf::kernels::ZF_CUDA_NS
