// kernels/device.hpp's public functions: each picks the simulation's side (cuda_simulated()),
// the GPU's (a ZF_CUDA build) or, in a build without ZF_CUDA, refuses with the same message as
// set_current_device(device::cuda), so a GPU path asked for on a CPU-only build says why at once.
#include <string>

#include "kernels/device.hpp"
#include "kernels/device_impl.hpp"

namespace zf::kernels {
namespace {

[[noreturn]] [[maybe_unused]] void no_cuda(const char* what) {
  throw kernel_error(std::string(what) +
                     ": zeroflow was built without CUDA: reconfigure with -DZF_CUDA=ON (needs nvcc "
                     "and the CUDA toolkit), or simulate CUDA on the CPU (ZF_CUDA_SIM=1)");
}

}  // namespace

// ZF_DEVICE_CALL(fn, args): the simulation's or the GPU's fn, or the refusal.
#if defined(ZF_CUDA)
#define ZF_DEVICE_CALL(fn, ...) \
  return cuda_simulated() ? cuda_sim::fn(__VA_ARGS__) : cuda::fn(__VA_ARGS__)
#else
#define ZF_DEVICE_CALL(fn, ...)        \
  if (!cuda_simulated()) no_cuda(#fn); \
  return cuda_sim::fn(__VA_ARGS__)
#endif

void gpu_init(int ordinal) {
  ZF_DEVICE_CALL(gpu_init, ordinal);
}
void* gpu_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  ZF_DEVICE_CALL(gpu_alloc, bytes);
}
void gpu_free(void* p) noexcept {
  if (!p) return;
#if defined(ZF_CUDA)
  if (!cuda_simulated()) return cuda::gpu_free(p);
#endif
  cuda_sim::gpu_free(p);
}
void gpu_copy(void* dst, const void* src, std::size_t bytes) {
  ZF_DEVICE_CALL(gpu_copy, dst, src, bytes);
}
void gpu_zero(void* p, std::size_t bytes) {
  if (bytes == 0) return;
  ZF_DEVICE_CALL(gpu_zero, p, bytes);
}
void gpu_synchronize() {
  ZF_DEVICE_CALL(gpu_synchronize);
}
gpu_memory_stats gpu_memory() {
  ZF_DEVICE_CALL(gpu_memory);
}
std::uint64_t gpu_free_bytes() {
  ZF_DEVICE_CALL(gpu_free_bytes);
}

gpu_stream::gpu_stream() {
  const auto create = []() -> void* { ZF_DEVICE_CALL(stream_create); };
  s_ = create();
}
gpu_stream::~gpu_stream() {
  if (!s_) return;
#if defined(ZF_CUDA)
  if (!cuda_simulated()) {
    cuda::stream_destroy(s_);
    return;
  }
#endif
  cuda_sim::stream_destroy(s_);
}
void gpu_stream::synchronize() {
  ZF_DEVICE_CALL(stream_synchronize, s_);
}

gpu_stream_scope::gpu_stream_scope(const gpu_stream& s) {
  const auto swap = [&]() -> void* { ZF_DEVICE_CALL(exchange_stream, s.handle()); };
  prev_ = swap();
}
gpu_stream_scope::~gpu_stream_scope() {
#if defined(ZF_CUDA)
  if (!cuda_simulated()) {
    cuda::exchange_stream(prev_);
    return;
  }
#endif
  cuda_sim::exchange_stream(prev_);
}

gpu_event::gpu_event() {
  const auto create = []() -> void* { ZF_DEVICE_CALL(event_create); };
  e_ = create();
}
gpu_event::~gpu_event() {
  if (!e_) return;
#if defined(ZF_CUDA)
  if (!cuda_simulated()) {
    cuda::event_destroy(e_);
    return;
  }
#endif
  cuda_sim::event_destroy(e_);
}
void gpu_event::record(const gpu_stream& s) {
  ZF_DEVICE_CALL(event_record, e_, s.handle());
}
void gpu_event::record_current() {
  ZF_DEVICE_CALL(event_record, e_, nullptr);
}
void gpu_event::wait_on(const gpu_stream& s) const {
  ZF_DEVICE_CALL(event_wait, e_, s.handle());
}
void gpu_event::synchronize() const {
  ZF_DEVICE_CALL(event_synchronize, e_);
}
float gpu_event::ms_since(const gpu_event& start) const {
  ZF_DEVICE_CALL(event_ms, start.e_, e_);
}

}  // namespace zf::kernels
