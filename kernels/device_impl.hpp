#pragma once
// Private to kernels/: the two implementations behind kernels/device.hpp's public functions
// (device_cpu.cpp picks one per call): `cuda` (device_cuda.cu, the runtime on a GPU) and
// `cuda_sim` (device_sim.cpp, host memory for the CPU simulation of CUDA). Opaque handles:
// cudaStream_t / cudaEvent_t, or the simulation's tokens.
#include <cstddef>

#include "kernels/device.hpp"

namespace zf::kernels {

#define ZF_DEVICE_IMPL_DECLS                                       \
  void gpu_init(int ordinal);                                      \
  void* gpu_alloc(std::size_t bytes);                              \
  void gpu_free(void* p) noexcept;                                 \
  void gpu_copy(void* dst, const void* src, std::size_t bytes);    \
  void gpu_zero(void* p, std::size_t bytes);                       \
  void gpu_synchronize();                                          \
  gpu_memory_stats gpu_memory();                                   \
  std::uint64_t gpu_free_bytes();                                  \
  void* stream_create();                                           \
  void stream_destroy(void* s) noexcept;                           \
  void stream_synchronize(void* s);                                \
  /* makes s this thread's current stream, returns the previous */ \
  void* exchange_stream(void* s) noexcept;                         \
  void* event_create();                                            \
  void event_destroy(void* e) noexcept;                            \
  /* on stream s, or this thread's current stream when null */     \
  void event_record(void* e, void* s);                             \
  void event_wait(void* e, void* s);                               \
  void event_synchronize(void* e);                                 \
  float event_ms(void* start, void* end);

namespace cuda {
ZF_DEVICE_IMPL_DECLS
}  // namespace cuda
namespace cuda_sim {
ZF_DEVICE_IMPL_DECLS
}  // namespace cuda_sim

#undef ZF_DEVICE_IMPL_DECLS

}  // namespace zf::kernels
