#pragma once
// Element-wise kernels over both cores (issue 16's profile: GELU, AdamW and the residual adds ran
// on one thread while the GEMMs used all of them). The pieces go to an OpenMP team of
// kernels::num_threads() threads (libgomp, already loaded for oneDNN, its threads kept spinning
// between regions: gemm_lib.hpp ensure_openmp_spin).
#include <cstddef>
#include <functional>

namespace zf::kernels::cpu {

// fn(begin, end) over [0, n): one call when n < min_n or one thread; else one piece per thread,
// every piece but the last a multiple of `align` elements, so each element meets the same code
// (vector body or scalar tail) as in one call over [0, n) and the results are the same bits.
void parallel_ranges(std::size_t n, std::size_t align, std::size_t min_n,
                     const std::function<void(std::size_t, std::size_t)>& fn);

}  // namespace zf::kernels::cpu
