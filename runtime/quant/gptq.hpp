#pragma once
// GPTQ (arXiv 2210.17323): post-training quantization of one linear layer that quantizes its
// inputs' weights one at a time and spreads each one's rounding error over the not yet quantized
// ones by the inverse Hessian of the layer's output error, H = 2/N sum x x^T over calibration
// inputs x [k]. It minimises ||X W - X Q|| where round-to-nearest minimises ||W - Q||.
//
// This implementation (our own, from the paper): dead inputs (H_jj = 0) are zeroed; damping
// adds `damp` x mean(diag H) to the diagonal (raised tenfold, up to four times, if H is still
// not positive definite); act-order processes inputs by decreasing H_jj; the inverse Hessian's
// upper Cholesky factor comes from LAPACK (OpenBLAS's dpotrf / dpotri, in double); errors
// propagate within blocks of `block` inputs at once and lazily (one sgemm) beyond them.
// Groups are static: every (output, group) scale and zero is chosen from the original weights
// before GPTQ runs (as round-to-nearest chooses them), so act-order keeps the packed format of
// kernels/quant.hpp (contiguous groups along the input) with no per-input group index.
// Exactness: with a diagonal Hessian no error propagates and GPTQ is round-to-nearest bit for bit.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/quant.hpp"

namespace zf::quant {

// H = 2/N sum over rows of x x^T for a layer's inputs, accumulated in double over any number of
// batches.
class hessian {
 public:
  explicit hessian(int k);
  // x [rows, k] with row stride ldx (0: k).
  void add(const float* x, int rows, int ldx = 0);
  int k() const { return k_; }
  long long rows() const { return rows_; }
  // [k, k] row-major, scaled by 2 / rows.
  std::vector<double> matrix() const;

 private:
  int k_;
  long long rows_ = 0;
  std::vector<double> sum_;  // sum of x x^T, [k, k]
  std::vector<float> gram_;  // one batch's x^T x (sgemm), reused
};

struct gptq_options {
  double damp = 0.01;     // fraction of mean(diag H) added to the diagonal
  bool act_order = true;  // inputs by decreasing H_jj
  int block = 128;        // inputs whose errors propagate eagerly
};

// What GPTQ did: the damping it needed and the inputs it found dead.
struct gptq_report {
  double damp = 0;
  int dead = 0;
};

// GPTQ of a weight given as quantize_rtn takes it (element (j, o) at w[j * stride_k + o *
// stride_n]) into the same data / scales / zeros, with h [k, k] from hessian::matrix().
// Throws std::invalid_argument for the shapes quantize_rtn refuses and zf::error when H stays
// singular after damping.
gptq_report gptq_quantize(kernels::qformat f, const float* w, std::size_t stride_k,
                          std::size_t stride_n, int k, int n, int group, bool asym, bool pow2,
                          const std::vector<double>& h, const gptq_options& opt, std::uint8_t* data,
                          float* scales, std::uint8_t* zeros);

}  // namespace zf::quant
