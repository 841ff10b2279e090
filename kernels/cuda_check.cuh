#pragma once
// Helpers private to the kernels' .cu files: CUDA runtime errors become kernel_error naming the
// operation, and grid sizes for grid-stride loops.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "kernels/dispatch.hpp"

namespace zf::kernels::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw kernel_error(std::string("cuda ") + what + ": " + cudaGetErrorString(e));
  }
}

// Blocks of `block` threads covering n elements, at most max_blocks (grid-stride beyond that).
inline unsigned grid_for(std::size_t n, unsigned block, unsigned max_blocks) {
  const std::size_t b = (n + block - 1) / block;
  return static_cast<unsigned>(b < max_blocks ? (b == 0 ? 1 : b) : max_blocks);
}

}  // namespace zf::kernels::cuda
