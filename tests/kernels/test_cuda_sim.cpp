// The CPU simulation of CUDA (kernels/cuda_sim.hpp) itself: coordinates, block barriers, warp
// shuffles, shared memory, configuration errors and the faults it reports (a deadlock, a shuffle
// from a lane the block does not have). The twins' checks stand on these.
// This file includes kernels/cuda_compat.cuh, i.e. the simulated runtime: it must never include
// the real cuda_runtime.h (twin.hpp does, in a ZF_CUDA build).
#include <doctest/doctest.h>

#include <numeric>
#include <string>
#include <vector>

#include "kernels/cuda_compat.cuh"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

// out[block] = sum of x[block*n ...] by a strided loop, a warp xor-reduction, a block barrier
// and a second warp reduction: the reduction every norm and softmax twin uses.
__global__ void block_sum(const float* x, float* out, int n) {
  __shared__ float warp_sums[32];
  float s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    s = threadIdx.x < (blockDim.x + 31) / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
  }
}

// Every thread writes its coordinates: 3-d grids and blocks, linear ids in x-fastest order.
__global__ void coordinates(int* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned per = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  int* o = out + 4 * (block * per + t);
  o[0] = static_cast<int>(block);
  o[1] = static_cast<int>(threadIdx.x);
  o[2] = static_cast<int>(threadIdx.y);
  o[3] = static_cast<int>(threadIdx.z);
}

// Reverses n <= blockDim.x values through dynamic shared memory (needs the barrier between the
// write and the read); also reports the first shared value before any write.
__global__ void reverse_shared(const float* x, float* y, int n, float* first_seen) {
  ZF_SHARED_DYNAMIC(float, tile);
  if (threadIdx.x == 0) *first_seen = tile[0];
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < n) tile[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < n) y[threadIdx.x] = tile[n - 1 - threadIdx.x];
}

// out[t] = value of lane (t+1)%32 (a rotation by __shfl_sync) plus an up-shift.
__global__ void rotate(int* out) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int v = static_cast<int>(threadIdx.x);
  const int r = __shfl_sync(0xffffffffu, v, (lane + 1) % 32);
  const int u = __shfl_up_sync(0xffffffffu, v, 1);
  out[2 * threadIdx.x] = r;
  out[2 * threadIdx.x + 1] = u;
}

// Reads a neighbour's shared value with no barrier after the writes: a race.
__global__ void missing_barrier(float* y) {
  ZF_SHARED_DYNAMIC(float, tile);
  tile[threadIdx.x] = static_cast<float>(threadIdx.x);
  y[threadIdx.x] = tile[(threadIdx.x + 1) % blockDim.x];
}

__global__ void divergent_barrier(int* x) {
  if (threadIdx.x < 5) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  x[threadIdx.x] = 1;
}

__global__ void add_all(float* x) {
  atomicAdd(x, 1.0f);
}

}  // namespace
}  // namespace zf::kernels::ZF_CUDA_NS

using namespace zf::kernels::cuda_sim;

TEST_CASE("cuda sim: block reductions through shuffles and a barrier, any number of warps") {
  for (int threads : {32, 64, 256, 1024}) {
    CAPTURE(threads);
    const int blocks = 5, n = 1000;
    std::vector<float> x(static_cast<std::size_t>(blocks) * n);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 13);
    std::vector<float> out(blocks, -1.0f);
    ZF_LAUNCH(block_sum, blocks, threads, 0)(x.data(), out.data(), n);
    CHECK(cudaGetLastError() == cudaSuccess);
    for (int b = 0; b < blocks; ++b) {
      const float want = std::accumulate(x.begin() + b * n, x.begin() + (b + 1) * n, 0.0f);
      CHECK(out[b] == want);  // small integers: exact in any order
    }
  }
}

TEST_CASE("cuda sim: 3-d grids and blocks give every thread its coordinates once") {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int total = 12 * 24;
  std::vector<int> out(4 * total, -1);
  ZF_LAUNCH(coordinates, grid, block, 0)(out.data());
  for (int i = 0; i < total; ++i) {
    const int t = i % 24;
    CHECK(out[4 * i] == i / 24);
    CHECK(out[4 * i + 1] == t % 4);
    CHECK(out[4 * i + 2] == (t / 4) % 3);
    CHECK(out[4 * i + 3] == t / 12);
  }
}

TEST_CASE("cuda sim: dynamic shared memory starts poisoned and carries values across a barrier") {
  std::vector<float> x(100), y(100, 0.0f);
  std::iota(x.begin(), x.end(), 0.0f);
  float first = 0.0f;
  ZF_LAUNCH(reverse_shared, 1, 128, 128 * sizeof(float))(x.data(), y.data(), 100, &first);
  CHECK(first != first);  // NaN: nothing was written yet
  for (int i = 0; i < 100; ++i) CHECK(y[i] == x[99 - i]);
}

TEST_CASE("cuda sim: __shfl_sync rotates within a warp, __shfl_up_sync keeps lane 0") {
  std::vector<int> out(2 * 64);
  ZF_LAUNCH(rotate, 1, 64, 0)(out.data());
  for (int t = 0; t < 64; ++t) {
    CHECK(out[2 * t] == (t / 32) * 32 + (t % 32 + 1) % 32);
    CHECK(out[2 * t + 1] == (t % 32 == 0 ? t : t - 1));
  }
}

TEST_CASE("cuda sim: a read of another thread's write without a barrier sees the old value") {
  // Threads run in a different order each pass, so whichever thread runs first reads poison.
  for (int launch = 0; launch < 4; ++launch) {
    std::vector<float> y(64, 0.0f);
    ZF_LAUNCH(missing_barrier, 1, 64, 64 * sizeof(float))(y.data());
    int stale = 0;
    for (float v : y) stale += v != v;
    CHECK(stale > 0);
  }
}

TEST_CASE("cuda sim: faults are reported, the next launch runs clean") {
  std::vector<int> x(64);
  std::vector<float> v(200, 1.0f), out(1);
  std::string m;
  try {
    ZF_LAUNCH(divergent_barrier, 1, 64, 0)(x.data());
  } catch (const zf::kernels::kernel_error& e) {
    m = e.what();
  }
  CHECK(m.find("deadlock") != std::string::npos);
  m.clear();
  try {
    ZF_LAUNCH(block_sum, 1, 100, 0)(v.data(), out.data(), 200);  // a partial last warp
  } catch (const zf::kernels::kernel_error& e) {
    m = e.what();
  }
  CHECK(m.find("which has only 4 threads") != std::string::npos);
  ZF_LAUNCH(block_sum, 1, 96, 0)(v.data(), out.data(), 200);
  CHECK(out[0] == 200.0f);
  float total = 0.0f;
  ZF_LAUNCH(add_all, 3, 50, 0)(&total);
  CHECK(total == 150.0f);
}

TEST_CASE("cuda sim: launches the runtime refuses leave an error for cudaGetLastError") {
  std::vector<float> v(10), out(1, -1.0f);
  ZF_LAUNCH(block_sum, 0, 32, 0)(v.data(), out.data(), 10);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(cudaGetLastError() == cudaSuccess);  // taken once
  ZF_LAUNCH(block_sum, 1, 2048, 0)(v.data(), out.data(), 10);
  CHECK(std::string(cudaGetErrorString(cudaGetLastError())) == "invalid configuration argument");
  ZF_LAUNCH(block_sum, 1, 32, 1u << 20)(v.data(), out.data(), 10);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(out[0] == -1.0f);  // nothing ran
}
