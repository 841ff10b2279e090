// The host side of the cuda device on a GPU (kernels/device_impl.hpp's `cuda` side, behind
// kernels/device.hpp; and dispatch.hpp's device count): GPU selection, the stream-ordered memory
// pool, copies, streams and events. device_sim.cpp is the simulation's side; both are checked by
// tests/kernels/test_device.cpp (this one on a GPU only).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda_compat.cuh"
#include "kernels/device_impl.hpp"

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

namespace cuda {

void gpu_init(int ordinal) {
  const int n = device_count();
  if (ordinal < 0 || ordinal >= n) {
    throw kernel_error("GPU " + std::to_string(ordinal) + " requested, but this process sees " +
                       std::to_string(n) + " CUDA device(s)");
  }
  check(cudaSetDevice(ordinal), "cudaSetDevice");
  cudaMemPool_t pool = pool_of_current();
  std::uint64_t keep = UINT64_MAX;  // never trim the pool at synchronisation points
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
        "cudaMemPoolSetAttribute(release threshold)");
  std::uint64_t zero = 0;
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero),
        "cudaMemPoolSetAttribute(reserved high)");
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero),
        "cudaMemPoolSetAttribute(used high)");
}

void* gpu_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, current_stream());
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw kernel_error("out of GPU memory: " + std::to_string(bytes) + " bytes requested (" +
                       cudaGetErrorString(e) + ")");
  }
  return p;
}

void gpu_free(void* p) noexcept {
  if (p) (void)cudaFreeAsync(p, current_stream());
}

void gpu_copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, current_stream()), "gpu_copy");
}

void gpu_zero(void* p, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(p, 0, bytes, current_stream()), "gpu_zero");
}

void gpu_synchronize() {
  check(cudaStreamSynchronize(current_stream()), "gpu_synchronize");
}

std::uint64_t gpu_free_bytes() {
  std::size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return free;
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

// Non-blocking: its work does not order against the legacy default stream.
void* stream_create() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return s;
}

void stream_destroy(void* s) noexcept {
  if (s) (void)cudaStreamDestroy(static_cast<cudaStream_t>(s));
}

void stream_synchronize(void* s) {
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "cudaStreamSynchronize");
}

void* exchange_stream(void* s) noexcept {
  void* prev = tl_stream;
  tl_stream = static_cast<cudaStream_t>(s);
  return prev;
}

void* event_create() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreate(&e), "cudaEventCreate");
  return e;
}

void event_destroy(void* e) noexcept {
  if (e) (void)cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

void event_record(void* e, void* s) {
  cudaStream_t st = s ? static_cast<cudaStream_t>(s) : current_stream();
  check(cudaEventRecord(static_cast<cudaEvent_t>(e), st), "cudaEventRecord");
}

void event_wait(void* e, void* s) {
  cudaStream_t st = s ? static_cast<cudaStream_t>(s) : current_stream();
  check(cudaStreamWaitEvent(st, static_cast<cudaEvent_t>(e), 0), "cudaStreamWaitEvent");
}

void event_synchronize(void* e) {
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(e)), "cudaEventSynchronize");
}

float event_ms(void* start, void* end) {
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)),
        "cudaEventElapsedTime");
  return ms;
}

}  // namespace cuda
}  // namespace zf::kernels
