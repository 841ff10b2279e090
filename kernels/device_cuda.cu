// CUDA side of kernels/dispatch.cpp: how many GPUs this process sees (0 when the driver is
// missing or no device is present; the error is cleared so later calls start clean).
#include <cuda_runtime.h>

namespace zf::kernels::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace zf::kernels::cuda
