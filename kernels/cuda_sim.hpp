#pragma once
// A CUDA execution model on the CPU, for testing the kernels' own logic where no GPU is: the
// <family>_cuda.cu sources compiled by the host compiler (kernels/cuda_compat.cuh) run here.
// - A launch runs its blocks one after another; a block's threads are fibers (ucontext) on the
//   calling thread, switched only at barriers: __syncthreads() waits for every live thread of the
//   block, __syncwarp() and the shuffles for every live lane of the warp (32 consecutive linear
//   thread ids, as on the hardware). Threads wait at different barriers -> kernel_error
//   ("deadlock"), which on a GPU would hang or be undefined. Between barriers the threads run
//   one after another in an order that changes every pass (forward, backward, rotated), so a
//   read of another thread's write that lacks a barrier sees the old value in some pass.
// - __shared__ is a function-static array (one block runs at a time, so it is the block's own;
//   it keeps the previous block's values). Dynamic shared memory (ZF_SHARED_DYNAMIC) is filled
//   with 0xff (NaN floats) before each block, so a read before any write shows.
// - Memory is host memory: cudaMalloc is an aligned host allocation, copies are memcpy, streams
//   and events are tokens; atomics are plain read-modify-writes (one OS thread runs a launch).
// - Errors a launch would report (zero or over-large grids and blocks, too much shared memory)
//   are kept for cudaGetLastError, as the runtime does.
// What it does not model: timing, concurrency between blocks, the memory model, FMA contraction
// (the host compiler's -ffp-contract decides), warp-divergent shuffles (all lanes must call).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct zf_sim_stream;
using cudaStream_t = zf_sim_stream*;

namespace zf::sim {

// The executing thread's coordinates (valid inside a launch).
struct thread_coords {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};
const thread_coords& coords() noexcept;
void* dynamic_shared_bytes() noexcept;
template <class T>
T* dynamic_shared() noexcept {
  return static_cast<T*>(dynamic_shared_bytes());
}
void sync_block();
void sync_warp();
// Exchanges 8 bytes with the lanes of this warp; returns lane src's value (own if src is out of
// range or not live).
std::uint64_t exchange(std::uint64_t mine, int src_lane);
int lane_id() noexcept;

// Runs fn on every thread of every block; records a configuration error instead where the runtime
// would refuse the launch.
void run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, const std::function<void()>& fn);

template <class F>
struct launcher {
  F kernel;
  dim3 grid, block;
  std::size_t shared_bytes;
  template <class... A>
  void operator()(A&&... a) const {
    run_grid(grid, block, shared_bytes, [&] { kernel(a...); });
  }
};

cudaError_t take_last_error() noexcept;
void set_last_error(cudaError_t e) noexcept;

template <class T>
T shuffle_from(T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  bits = exchange(bits, src);
  T out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

}  // namespace zf::sim

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx (::zf::sim::coords().thread_idx)
#define blockIdx (::zf::sim::coords().block_idx)
#define blockDim (::zf::sim::coords().block_dim)
#define gridDim (::zf::sim::coords().grid_dim)
#define warpSize 32

inline void __syncthreads() {
  ::zf::sim::sync_block();
}
inline void __syncwarp(unsigned = 0xffffffffu) {
  ::zf::sim::sync_warp();
}
template <class T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  const int lane = ::zf::sim::lane_id();
  return ::zf::sim::shuffle_from(v, (lane / width) * width + src % width);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = ::zf::sim::lane_id();
  const int src = lane ^ mask;
  return ::zf::sim::shuffle_from(v, src / width == lane / width ? src : lane);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::zf::sim::lane_id();
  const int src = lane + static_cast<int>(delta);
  return ::zf::sim::shuffle_from(v, src / width == lane / width ? src : lane);
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::zf::sim::lane_id();
  const int src = lane - static_cast<int>(delta);
  return ::zf::sim::shuffle_from(v, src >= 0 && src / width == lane / width ? src : lane);
}
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}

// The runtime API the .cu files use.
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaMalloc(void** p, std::size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, std::size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind k,
                            cudaStream_t s);
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
