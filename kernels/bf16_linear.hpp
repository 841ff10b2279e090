#pragma once
// bf16 linear family (issue 16, `serve --dtype bf16`): a linear layer's weight held as bf16 rows
// and multiplied by fp32 activations with fp32 accumulation, so the weights a decode step streams
// are half of fp32's bytes while the arithmetic stays fp32's.
//
// Layout: W [n, k] bf16 (raw bits, round to nearest even from fp32), one row per output, the
// orientation of the quant family's qmatrix (kernels/quant.hpp): each output of a GEMV is one dot
// product over a contiguous row. y [m, n] = x [m, k] @ W^T (+ bias) (+ y), io as qgemm_io.
//
// Two kernels, one contract:
//   direct (decode, m <= bf16_direct_rows, and every row in batch-invariant mode): outputs
//     [o0, o1) straight from the bf16 rows. With AVX-512 BF16 (chosen at run time) each fp32
//     activation is split into three bf16 parts (x = hi + mid + lo, exact to fp32's 24 bits) and
//     each part is multiplied by vdpbf16ps, whose bf16 x bf16 products are exact in fp32: the
//     sums of fp32 x bf16 products at a third of the instructions a widen-then-FMA loop needs per
//     row. Elsewhere a portable loop widens the weights (exact) and multiplies in fp32. Either
//     way an output's operations do not depend on m, on the row's place in the batch or on the
//     output range, so callers may split outputs over threads and batches over steps
//     (batch-invariant).
//   prefill (m > bf16_direct_rows, not batch-invariant): activations rounded to bf16 and one
//     oneDNN bf16 matmul (kernels/gemm_lib.hpp cpu::gemm_bf16; AMX / AVX-512 BF16), fp32 out.
//     Activations lose fp32 precision here (bf16 compute, as a bf16 model's prefill has it).
#include <cstddef>
#include <cstdint>

#include "kernels/quant.hpp"  // qgemm_io

namespace zf::kernels {

struct bf16_matrix {
  int n = 0, k = 0;                     // outputs, inputs
  const std::uint16_t* data = nullptr;  // [n, k] bf16 bits
};

// Rows at most that take the direct kernel outside batch-invariant mode.
inline constexpr int bf16_direct_rows = 16;

// y = x @ W^T (+ bias) (+ y) (dispatched: direct or prefill as above; the direct one split over
// the threads kernels::kernel_pool lends).
void bf16_gemm(const bf16_matrix& w, const qgemm_io& io);

// Whether the direct kernel uses AVX-512 BF16 (the CPU has it and set_bf16_simd(false) has not
// switched it off, e.g. to test the portable loop).
bool bf16_simd() noexcept;
void set_bf16_simd(bool on) noexcept;

namespace cpu {
// The spec: every weight widened to fp32, each dot product accumulated in double in input order.
void bf16_gemm_reference(const bf16_matrix& w, const qgemm_io& io);
// uint16 elements bf16_split_rows writes for m rows of k inputs with `parts` parts.
std::size_t bf16_split_elems(int m, int k, int parts);
// x [m, k] (row stride ldx, 0: k) -> xs [m][parts][kp] bf16 (kp = k rounded up to 32, the pad
// zero): part 0 = rne(x), part 1 = rne(x - part 0), part 2 = rne(x - part 0 - part 1).
void bf16_split_rows(const float* x, int ldx, int m, int k, int parts, std::uint16_t* xs);
// Direct kernel over outputs [o0, o1). xs: bf16_split_rows(io.x, ..., 3) when bf16_simd(), else
// ignored (the portable loop reads io.x).
void bf16_gemm_direct(const bf16_matrix& w, const qgemm_io& io, const std::uint16_t* xs, int o0,
                      int o1);
// Prefill: xb = bf16_split_rows(io.x, ..., 1) (dense [m, kp]), then gemm_bf16 and the bias.
void bf16_gemm_prefill(const bf16_matrix& w, const qgemm_io& io, const std::uint16_t* xb);
}  // namespace cpu

}  // namespace zf::kernels
