// kernels/device.hpp in a build without ZF_CUDA: every call refuses with the same message as
// set_current_device(device::cuda), so a GPU path asked for on a CPU-only build says why at once.
// (With ZF_CUDA, device_cuda.cu defines these and this file is empty.)
#include "kernels/device.hpp"

#if !defined(ZF_CUDA)
#include <string>

namespace zf::kernels {
namespace {

[[noreturn]] void no_cuda(const char* what) {
  throw kernel_error(std::string(what) +
                     ": zeroflow was built without CUDA: reconfigure with -DZF_CUDA=ON (needs nvcc "
                     "and the CUDA toolkit)");
}

}  // namespace

void gpu_init(int) {
  no_cuda("gpu_init");
}
void* gpu_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  no_cuda("gpu_alloc");
}
void gpu_free(void*) noexcept {}
void gpu_copy(void*, const void*, std::size_t) {
  no_cuda("gpu_copy");
}
void gpu_synchronize() {
  no_cuda("gpu_synchronize");
}
gpu_memory_stats gpu_memory() {
  no_cuda("gpu_memory");
}
gpu_stream::gpu_stream() {
  no_cuda("gpu_stream");
}
gpu_stream::~gpu_stream() = default;
void gpu_stream::synchronize() {
  no_cuda("gpu_stream::synchronize");
}
gpu_stream_scope::gpu_stream_scope(const gpu_stream&) {
  no_cuda("gpu_stream_scope");
}
gpu_stream_scope::~gpu_stream_scope() = default;
gpu_event::gpu_event() {
  no_cuda("gpu_event");
}
gpu_event::~gpu_event() = default;
void gpu_event::record(const gpu_stream&) {
  no_cuda("gpu_event::record");
}
void gpu_event::record_current() {
  no_cuda("gpu_event::record_current");
}
void gpu_event::wait_on(const gpu_stream&) const {
  no_cuda("gpu_event::wait_on");
}
void gpu_event::synchronize() const {
  no_cuda("gpu_event::synchronize");
}
float gpu_event::ms_since(const gpu_event&) const {
  no_cuda("gpu_event::ms_since");
}

}  // namespace zf::kernels
#endif
