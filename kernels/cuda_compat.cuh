#pragma once
// One CUDA source, two compilers. Every <family>_cuda.cu includes this header first:
// - nvcc (a ZF_CUDA build) compiles it into zf_kernels_cuda, namespace zf::kernels::cuda, with
//   the real runtime (cuda_runtime.h);
// - the host compiler compiles the same file into zf_kernels_cuda_sim, namespace
//   zf::kernels::cuda_sim, against kernels/cuda_sim.hpp, which runs each block's threads as
//   fibers on one CPU thread (shared memory, __syncthreads, warp shuffles). Every build, with or
//   without nvcc or a GPU, runs the twins' indexing, reductions and barriers against their cpu
//   kernels (tests/kernels/test_cuda_sim_*.cpp); a GPU adds only what the hardware decides
//   (timing, memory model, FMA contraction).
// So a .cu file writes launches as ZF_LAUNCH(kernel, grid, block, shared_bytes)(args...) instead
// of kernel<<<...>>>, dynamic shared memory as ZF_SHARED_DYNAMIC(T, name), opens
// `namespace zf::kernels::ZF_CUDA_NS`, uses only the runtime calls cuda_sim.hpp provides, and
// keeps bf16 as raw std::uint16_t bits (the helpers below, identical on both compilers).
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define ZF_CUDA_NS cuda
#define ZF_LAUNCH(kernel, grid, block, shared_bytes) \
  kernel<<<(grid), (block), (shared_bytes), ::zf::kernels::cuda::current_stream()>>>
#define ZF_SHARED_DYNAMIC(T, name)                         \
  extern __shared__ __align__(16) unsigned char zf_smem[]; \
  T* name = reinterpret_cast<T*>(zf_smem)
#define ZF_HD __host__ __device__ __forceinline__
#else
#include "kernels/cuda_sim.hpp"
#define ZF_CUDA_NS cuda_sim
#define ZF_LAUNCH(kernel, grid, block, shared_bytes) \
  ::zf::sim::launcher<decltype(&kernel)> {           \
    &kernel, dim3(grid), dim3(block), (shared_bytes) \
  }
#define ZF_SHARED_DYNAMIC(T, name) T* name = ::zf::sim::dynamic_shared<T>()
#define ZF_HD inline
#endif

#include <string>

#include "kernels/dispatch.hpp"

namespace zf::kernels::ZF_CUDA_NS {

// The stream this thread queues kernels on (nullptr: the legacy default stream). A rank or an
// engine sets its own once (stream_scope) so that its work and its communication overlap.
inline thread_local cudaStream_t tl_stream = nullptr;
inline cudaStream_t current_stream() noexcept {
  return tl_stream;
}

// CUDA runtime errors become kernel_error naming the operation.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw kernel_error(std::string("cuda ") + what + ": " + cudaGetErrorString(e));
  }
}
inline void check_launch(const char* what) {
  check(cudaGetLastError(), what);
}

// Blocks of `block` threads covering n elements, at most max_blocks (grid-stride beyond that).
inline unsigned grid_for(std::size_t n, unsigned block, unsigned max_blocks) {
  const std::size_t b = (n + block - 1) / block;
  return static_cast<unsigned>(b < max_blocks ? (b == 0 ? 1 : b) : max_blocks);
}

// bf16 <-> fp32 on raw bits, round to nearest even (NaN kept quiet): the same operations as
// kernels/convert.hpp, so both backends give the same bits.
ZF_HD float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
ZF_HD std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

}  // namespace zf::kernels::ZF_CUDA_NS
