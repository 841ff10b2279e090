// Compiled with -fopenmp (kernels/CMakeLists.txt): the one OpenMP region of the kernels.
#include <omp.h>

#include <algorithm>

#include "kernels/parallel.hpp"
#include "kernels/threads.hpp"

namespace zf::kernels::cpu {

void parallel_ranges(std::size_t n, std::size_t align, std::size_t min_n,
                     const std::function<void(std::size_t, std::size_t)>& fn) {
  const int t = std::max(1, kernels::num_threads());
  if (n < min_n || t == 1) return fn(0, n);
  // pieces of whole `align` blocks; the last one takes the remainder (and the tail)
  const std::size_t per = (n / align + t - 1) / t * align;
#pragma omp parallel num_threads(t)
  {
    const std::size_t b = std::min(n, per * static_cast<std::size_t>(omp_get_thread_num()));
    const std::size_t e = omp_get_thread_num() == t - 1 ? n : std::min(n, b + per);
    if (b < e) fn(b, e);
  }
}

}  // namespace zf::kernels::cpu
