#include "runtime/core/device_key.hpp"

#include "runtime/core/error.hpp"

namespace zf {

kernels::device device_named(const std::string& value, const std::string& key) {
  if (value != "cuda") return kernels::device::cpu;
  try {
    const kernels::device_scope probe(kernels::device::cuda);
  } catch (const kernels::kernel_error& e) {
    fail("{} = cuda: {}", key, e.what());
  }
  return kernels::device::cuda;
}

}  // namespace zf
