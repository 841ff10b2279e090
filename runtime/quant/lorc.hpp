#pragma once
// Low-rank compensation (LoRC, ZeroQuant-V2, arXiv 2303.08302): the error a quantized matrix
// leaves, E = W - dequantize(Q) [k, n], replaced by its best rank-r approximation A B (truncated
// SVD, Eckart-Young), so the layer computes x @ dequantize(Q) + (x @ A) @ B. The singular values
// are split as their square roots between the two factors, so A and B have like magnitudes.
// The SVD is LAPACK's sgesdd (OpenBLAS).
#include <cstddef>
#include <vector>

#include "kernels/quant.hpp"

namespace zf::quant {

struct low_rank {
  int k = 0, n = 0, rank = 0;
  std::vector<float> a;  // [k, rank]
  std::vector<float> b;  // [rank, n]
};

// The best rank-`rank` approximation of e [k, n] (row-major); rank is clamped to min(k, n).
// Throws zf::error when the SVD does not converge.
low_rank best_low_rank(const float* e, int k, int n, int rank);

// LoRC of a quantized weight: w as quantize_rtn takes it (element (j, o) at w[j * stride_k +
// o * stride_n]) and q its quantization.
low_rank lorc(const float* w, std::size_t stride_k, std::size_t stride_n, const kernels::qmatrix& q,
              int rank);

}  // namespace zf::quant
