// The host side of the cuda device (kernels/device.hpp, kernels/dispatch.hpp's device count):
// GPU selection, the stream-ordered memory pool, copies, streams and events. Not simulated
// (kernels/cuda_sim.hpp models kernels, not the driver's pools): checked on a GPU by
// tests/kernels/test_device.cpp.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda_compat.cuh"
#include "kernels/device.hpp"

namespace zf::kernels {
namespace cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: clear it so later calls start clean
    return 0;
  }
  return n;
}

}  // namespace cuda

namespace {

cudaMemPool_t pool_of_current() {
  int dev = 0;
  cuda::check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaMemPool_t pool = nullptr;
  cuda::check(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
  return pool;
}

std::uint64_t pool_attr(cudaMemPool_t pool, cudaMemPoolAttr a) {
  std::uint64_t v = 0;
  cuda::check(cudaMemPoolGetAttribute(pool, a, &v), "cudaMemPoolGetAttribute");
  return v;
}

}  // namespace

void gpu_init(int ordinal) {
  const int n = cuda::device_count();
  if (ordinal < 0 || ordinal >= n) {
    throw kernel_error("GPU " + std::to_string(ordinal) + " requested, but this process sees " +
                       std::to_string(n) + " CUDA device(s)");
  }
  cuda::check(cudaSetDevice(ordinal), "cudaSetDevice");
  cudaMemPool_t pool = pool_of_current();
  std::uint64_t keep = UINT64_MAX;  // never trim the pool at synchronisation points
  cuda::check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
              "cudaMemPoolSetAttribute(release threshold)");
  std::uint64_t zero = 0;
  cuda::check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero),
              "cudaMemPoolSetAttribute(reserved high)");
  cuda::check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero),
              "cudaMemPoolSetAttribute(used high)");
}

void* gpu_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, cuda::current_stream());
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw kernel_error("out of GPU memory: " + std::to_string(bytes) + " bytes requested (" +
                       cudaGetErrorString(e) + ")");
  }
  return p;
}

void gpu_free(void* p) noexcept {
  if (p) (void)cudaFreeAsync(p, cuda::current_stream());
}

void gpu_copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  cuda::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda::current_stream()),
              "gpu_copy");
}

void gpu_synchronize() {
  cuda::check(cudaStreamSynchronize(cuda::current_stream()), "gpu_synchronize");
}

gpu_memory_stats gpu_memory() {
  cudaMemPool_t pool = pool_of_current();
  gpu_memory_stats s;
  s.reserved = pool_attr(pool, cudaMemPoolAttrReservedMemCurrent);
  s.used = pool_attr(pool, cudaMemPoolAttrUsedMemCurrent);
  s.reserved_high = pool_attr(pool, cudaMemPoolAttrReservedMemHigh);
  s.used_high = pool_attr(pool, cudaMemPoolAttrUsedMemHigh);
  return s;
}

gpu_stream::gpu_stream() {
  cudaStream_t s = nullptr;
  cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  s_ = s;
}

gpu_stream::~gpu_stream() {
  if (s_) (void)cudaStreamDestroy(static_cast<cudaStream_t>(s_));
}

void gpu_stream::synchronize() {
  cuda::check(cudaStreamSynchronize(static_cast<cudaStream_t>(s_)), "cudaStreamSynchronize");
}

gpu_stream_scope::gpu_stream_scope(const gpu_stream& s) : prev_(cuda::tl_stream) {
  cuda::tl_stream = static_cast<cudaStream_t>(s.handle());
}

gpu_stream_scope::~gpu_stream_scope() {
  cuda::tl_stream = static_cast<cudaStream_t>(prev_);
}

gpu_event::gpu_event() {
  cudaEvent_t e = nullptr;
  cuda::check(cudaEventCreate(&e), "cudaEventCreate");
  e_ = e;
}

gpu_event::~gpu_event() {
  if (e_) (void)cudaEventDestroy(static_cast<cudaEvent_t>(e_));
}

void gpu_event::record(const gpu_stream& s) {
  cuda::check(cudaEventRecord(static_cast<cudaEvent_t>(e_), static_cast<cudaStream_t>(s.handle())),
              "cudaEventRecord");
}

void gpu_event::record_current() {
  cuda::check(cudaEventRecord(static_cast<cudaEvent_t>(e_), cuda::current_stream()),
              "cudaEventRecord");
}

void gpu_event::wait_on(const gpu_stream& s) const {
  cuda::check(
      cudaStreamWaitEvent(static_cast<cudaStream_t>(s.handle()), static_cast<cudaEvent_t>(e_), 0),
      "cudaStreamWaitEvent");
}

void gpu_event::synchronize() const {
  cuda::check(cudaEventSynchronize(static_cast<cudaEvent_t>(e_)), "cudaEventSynchronize");
}

float gpu_event::ms_since(const gpu_event& start) const {
  float ms = 0.0f;
  cuda::check(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.e_), static_cast<cudaEvent_t>(e_)),
      "cudaEventElapsedTime");
  return ms;
}

}  // namespace zf::kernels
