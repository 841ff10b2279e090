// AdamW family, CUDA twin of adamw_cpu.cpp with the same contract: p, g, m, v are GPU pointers,
// the scalars come from adamw_coefficients_of (computed on the host exactly as for the cpu
// kernel), and each element goes through the same operations in the same order. Results match
// the cpu kernel to a few ulp (FMA contraction may differ between the two compilers).
// Invariants: grid-stride loops over n (any size_t); work is queued on the default stream and
// adamw_step returns without waiting. sum_squares reduces in double, per block in a fixed tree,
// then the per-block partials in order on the host: the same input gives the same bits every run.
#include <vector>

#include "kernels/adamw.hpp"
#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kMaxBlocks = 4096;
constexpr unsigned kSumBlocks = 1024;

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g,
                             float* __restrict__ m, float* __restrict__ v, std::size_t n,
                             adamw_coefficients c) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float gv = g[i] * c.grad_scale;
    const float mi = m[i];
    float pv = p[i] * c.decay;
    const float mv = c.c1 * (gv - mi) + (c.small ? mi : gv);
    float vv = v[i] * c.b2;
    vv = vv + c.w2 * gv * gv;
    pv = pv + c.neg_step * mv / (sqrtf(vv) / c.bc2_sqrt + c.eps);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
  }
}

// partial[blockIdx.x] = sum over this block's grid-stride elements of x^2, in double.
__global__ void sum_squares_kernel(const float* __restrict__ x, std::size_t n,
                                   double* __restrict__ partial) {
  __shared__ double warp_sums[kBlock / 32];
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  double s = 0.0;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double d = x[i];
    s += d * d;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31u) == 0) warp_sums[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    s = threadIdx.x < kBlock / 32 ? warp_sums[threadIdx.x] : 0.0;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
  }
}

}  // namespace

// p, m, v: [n] updated in place; g: [n] read only (all GPU memory).
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n,
                const adamw_params& a) {
  if (n == 0) return;
  ZF_LAUNCH(adamw_kernel, grid_for(n, kBlock, kMaxBlocks), kBlock, 0)
  (p, g, m, v, n, adamw_coefficients_of(a));
  check_launch("adamw_step launch");
}

// sum of x[i]^2 (x: [n] in GPU memory) in double; waits for the result.
double sum_squares(const float* x, std::size_t n) {
  if (n == 0) return 0.0;
  const unsigned blocks = grid_for(n, kBlock, kSumBlocks);
  double* partial = nullptr;
  cudaStream_t st = current_stream();
  check(cudaMallocAsync(reinterpret_cast<void**>(&partial), blocks * sizeof(double), st),
        "sum_squares alloc");
  ZF_LAUNCH(sum_squares_kernel, blocks, kBlock, 0)(x, n, partial);
  cudaError_t e = cudaGetLastError();
  std::vector<double> host(blocks);
  if (e == cudaSuccess) {
    e = cudaMemcpyAsync(host.data(), partial, blocks * sizeof(double), cudaMemcpyDeviceToHost, st);
  }
  (void)cudaFreeAsync(partial, st);
  if (e == cudaSuccess) e = cudaStreamSynchronize(st);
  check(e, "sum_squares");
  double s = 0.0;
  for (double b : host) s += b;
  return s;
}

}  // namespace zf::kernels::ZF_CUDA_NS
