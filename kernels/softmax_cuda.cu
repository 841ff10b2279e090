// Softmax + cross-entropy family, CUDA twin of softmax_cpu.cpp with the same contracts (GPU
// pointers, queued on current_stream(); only log_sum_exp waits, for its host result).
// Numerics follow the cpu kernel: max subtracted, each exp(x * scale - max) in float, their sum
// in double (here per-thread double partials, then a fixed-order block reduction in double), the
// row scaled by float(dloss / sum) and the target's gradient (float(e_t / sum) - 1) * dloss. Only
// the exp differs (CUDA's expf, <= 2 ulp, against the cpu's 8-lane polynomial, ~1 ulp) and the
// order of the double sum: probabilities agree to a few float ulp, losses to ~1e-7.
// Invariants:
// - One block per row (vocab rows are wide: 50257), 256..1024 threads by width, three sweeps over
//   the row (max; exp sum; write). The cpu kernel stores the exps in place between sweeps 2 and 3;
//   here sweep 3 recomputes them (the same expf of the same float, so the same bits), which keeps
//   global traffic at one read + one write per element (sweeps 2-3 hit L2).
// - 16-byte loads/stores over each row's aligned middle: the row start is aligned by a scalar head
//   of < 4 elements (a row of 50257 floats is aligned only every 4th row), then a scalar tail.
// - Deterministic: which thread sums which element depends only on v and the row's alignment, and
//   the reductions run in a fixed tree.
#include <cmath>
#include <cstdint>

#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/softmax.hpp"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kMaxBlock = 1024;  // block_for's largest block (launch bounds)

struct alignas(16) f4 {
  float x, y, z, w;
};

// Threads per row block: enough loads in flight for a vocab row, few idle threads on short rows.
unsigned block_for(int v) {
  return v >= 16384 ? kMaxBlock : v >= 4096 ? 512u : 256u;
}

// Calls f(j, x[j]) for this thread's share of x[0..v): a scalar head up to 16-byte alignment,
// float4 loads over the middle, a scalar tail.
template <class F>
__device__ __forceinline__ void row_read(const float* x, int v, F&& f) {
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int mis = static_cast<int>((reinterpret_cast<std::uintptr_t>(x) % 16) / 4);
  const int head = mis == 0 ? 0 : (4 - mis < v ? 4 - mis : v);
  if (tid < head) f(tid, x[tid]);
  const int body = (v - head) / 4;
  const f4* q = reinterpret_cast<const f4*>(x + head);
  for (int i = tid; i < body; i += nt) {
    const f4 a = q[i];
    const int j = head + 4 * i;
    f(j, a.x);
    f(j + 1, a.y);
    f(j + 2, a.z);
    f(j + 3, a.w);
  }
  for (int j = head + 4 * body + tid; j < v; j += nt) f(j, x[j]);
}

// x[j] = f(j, x[j]) over this thread's share, the same split as row_read.
template <class F>
__device__ __forceinline__ void row_update(float* x, int v, F&& f) {
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int mis = static_cast<int>((reinterpret_cast<std::uintptr_t>(x) % 16) / 4);
  const int head = mis == 0 ? 0 : (4 - mis < v ? 4 - mis : v);
  if (tid < head) x[tid] = f(tid, x[tid]);
  const int body = (v - head) / 4;
  f4* q = reinterpret_cast<f4*>(x + head);
  for (int i = tid; i < body; i += nt) {
    f4 a = q[i];
    const int j = head + 4 * i;
    a.x = f(j, a.x);
    a.y = f(j + 1, a.y);
    a.z = f(j + 2, a.z);
    a.w = f(j + 3, a.w);
    q[i] = a;
  }
  for (int j = head + 4 * body + tid; j < v; j += nt) x[j] = f(j, x[j]);
}

// Block-wide max (float) and sum (double), every thread gets the result. red: __shared__
// double[33] of the kernel; the two barriers make back-to-back calls safe (slot 32 holds the
// result, read before any thread can pass the next call's first barrier).
__device__ __forceinline__ float block_max(float m, double* red) {
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const unsigned warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) red[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < blockDim.x / kWarp ? static_cast<float>(red[lane]) : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) red[32] = m;
  }
  __syncthreads();
  return static_cast<float>(red[32]);
}

__device__ __forceinline__ double block_sum(double s, double* red) {
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const unsigned warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) red[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < blockDim.x / kWarp ? red[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) red[32] = s;
  }
  __syncthreads();
  return red[32];
}

// max over x[0..v) * scale, then the double sum of exp(x * scale - max), for the whole block.
struct row_stats {
  float mx;
  double sum;
};
__device__ __forceinline__ row_stats stats_of(const float* x, int v, float scale, double* red) {
  float m = -INFINITY;
  row_read(x, v, [&](int, float a) { m = fmaxf(m, a * scale); });
  const float mx = block_max(m, red);
  double s = 0.0;
  row_read(x, v, [&](int, float a) { s += static_cast<double>(expf(a * scale - mx)); });
  return {mx, block_sum(s, red)};
}

// logits: [n, v] -> dlogits in place; targets, loss: [n]. Block r: row r.
__global__ void __launch_bounds__(kMaxBlock)
    xent_fused_kernel(float* __restrict__ logits, const int* __restrict__ targets,
                      float* __restrict__ loss, int v, float dloss) {
  __shared__ double red[33];
  float* x = logits + static_cast<std::size_t>(blockIdx.x) * v;
  const int t = targets[blockIdx.x];
  if (t < 0) {  // ignored row (uniform over the block): loss 0, zero gradient
    row_update(x, v, [](int, float) { return 0.0f; });
    if (threadIdx.x == 0) loss[blockIdx.x] = 0.0f;
    return;
  }
  const float xt = x[t];  // read before the barriers that precede any write
  const row_stats st = stats_of(x, v, 1.0f, red);
  if (threadIdx.x == 0) {
    // torch: -log_softmax[t] = log(sum) - (x[t] - max)
    loss[blockIdx.x] = static_cast<float>(log(st.sum) - static_cast<double>(xt - st.mx));
  }
  const float k = static_cast<float>(static_cast<double>(dloss) / st.sum);
  const float gt =
      (static_cast<float>(static_cast<double>(expf(xt - st.mx)) / st.sum) - 1.0f) * dloss;
  row_update(x, v, [&](int j, float a) { return j == t ? gt : expf(a - st.mx) * k; });
}

// logits: [n, v] read only; targets, loss: [n].
__global__ void __launch_bounds__(kMaxBlock)
    xent_forward_kernel(const float* __restrict__ logits, const int* __restrict__ targets,
                        float* __restrict__ loss, int v) {
  __shared__ double red[33];
  const float* x = logits + static_cast<std::size_t>(blockIdx.x) * v;
  const int t = targets[blockIdx.x];
  if (t < 0) {
    if (threadIdx.x == 0) loss[blockIdx.x] = 0.0f;
    return;
  }
  const row_stats st = stats_of(x, v, 1.0f, red);
  if (threadIdx.x == 0) {
    loss[blockIdx.x] = static_cast<float>(log(st.sum) - static_cast<double>(x[t] - st.mx));
  }
}

// x: [n, v] in place: x[r] = softmax(x[r] * scale).
__global__ void __launch_bounds__(kMaxBlock)
    softmax_rows_kernel(float* __restrict__ x, int v, float scale) {
  __shared__ double red[33];
  float* xr = x + static_cast<std::size_t>(blockIdx.x) * v;
  const row_stats st = stats_of(xr, v, scale, red);
  const float k = static_cast<float>(1.0 / st.sum);
  row_update(xr, v, [&](int, float a) { return expf(a * scale - st.mx) * k; });
}

// x: [n] (one block) -> out[0] = sum of exp(x - max) in double, out[1] = max.
__global__ void __launch_bounds__(kMaxBlock)
    log_sum_exp_kernel(const float* __restrict__ x, int n, double* __restrict__ out) {
  __shared__ double red[33];
  const row_stats st = stats_of(x, n, 1.0f, red);
  if (threadIdx.x == 0) {
    out[0] = st.sum;
    out[1] = st.mx;
  }
}

}  // namespace

// logits: [n, v] (in place -> dlogits), targets: [n], loss: [n].
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss) {
  if (n <= 0 || v <= 0) return;
  ZF_LAUNCH(xent_fused_kernel, static_cast<unsigned>(n), block_for(v), 0)
  (logits, targets, loss, v, dloss);
  check_launch("softmax_xent_fused launch");
}

// logits: [n, v] (read only), targets: [n] -> loss: [n].
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v) {
  if (n <= 0 || v <= 0) return;
  ZF_LAUNCH(xent_forward_kernel, static_cast<unsigned>(n), block_for(v), 0)
  (logits, targets, loss, v);
  check_launch("softmax_xent_forward launch");
}

// x: [n, v] in place.
void softmax_rows(float* x, int n, int v, float scale) {
  if (n <= 0 || v <= 0) return;
  ZF_LAUNCH(softmax_rows_kernel, static_cast<unsigned>(n), block_for(v), 0)(x, v, scale);
  check_launch("softmax_rows launch");
}

// x: [n] in GPU memory; waits for the result (a host double, as the cpu kernel). The block's sum
// and max come back and the host adds max + log(sum) as the cpu kernel does; the sum's order
// differs from the cpu's sequential one, so the two agree to ~1e-7 relative, not bit for bit
// (the twin is deterministic: the same x gives the same bits every call). n <= 0: -inf (the log
// of an empty sum; the cpu kernel requires n >= 1).
double log_sum_exp(const float* x, int n) {
  if (n <= 0) return -INFINITY;
  // Per-call scratch of 16 bytes (stream-ordered cudaMallocAsync) until a device allocator exists.
  cudaStream_t st = current_stream();
  double* out = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&out), 2 * sizeof(double), st),
        "log_sum_exp alloc");
  ZF_LAUNCH(log_sum_exp_kernel, 1, block_for(n), 0)(x, n, out);
  cudaError_t e = cudaGetLastError();
  double host[2] = {0.0, 0.0};
  if (e == cudaSuccess) {
    e = cudaMemcpyAsync(host, out, sizeof host, cudaMemcpyDeviceToHost, st);
  }
  (void)cudaFreeAsync(out, st);
  if (e == cudaSuccess) e = cudaStreamSynchronize(st);
  check(e, "log_sum_exp");
  return host[1] + std::log(host[0]);
}

}  // namespace zf::kernels::ZF_CUDA_NS
