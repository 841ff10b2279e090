#include <cblas.h>

#include <thread>

#include "kernels/threads.hpp"

namespace zf::kernels::cpu {

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  openblas_set_num_threads(n < 1 ? 1 : n);
}

int num_threads() {
  return openblas_get_num_threads();
}

}  // namespace zf::kernels::cpu
