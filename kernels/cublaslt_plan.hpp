#pragma once
// One cuBLASLt matmul as plain data, in cuBLASLt's own (column-major) terms. The matmul twins
// (kernels/matmul_cuda.cu) translate their row-major arguments into an lt_gemm, and one call
// runs it: cuda::lt_matmul (kernels/gemm_cuda.cu, cuBLASLt on the GPU) or cuda_sim::lt_matmul
// (kernels/gemm_sim.cpp, the same definition executed on the host, so that every build tests the
// translation and the kernels around it against the cpu kernels).
//
// Definition (cuBLASLt's, column-major: element (i, j) of an [rows, cols] matrix X with leading
// dimension ld is X[i + j * ld]):
//   D[m, n] = alpha * op_a(A) @ op_b(B) + beta * C (+ bias[i] on every column of row i)
// op_a(A) is [m, k]: A is stored [m, k] (trans_a false) or [k, m] (trans_a true), lda >= its rows;
// op_b(B) is [k, n]: B is stored [k, n] or [n, k], ldb >= its rows. C and D are the same fp32
// buffer c [m, n], ldc >= m; C is not read where beta is 0. m, n, k >= 1.
// A and B are fp32 or bf16 (raw bits), both the same; accumulation is fp32 in every case. With
// fp32 operands the compute type may let the library round them first (cuBLAS's *_FAST_16BF /
// *_FAST_16F: the GEMMs of kernels/gemm_lib.hpp's 16-bit compute precisions).
#include <cstdint>

namespace zf::kernels {

enum class lt_type : std::uint8_t { f32, bf16 };
// f32: CUBLAS_COMPUTE_32F (no TF32: parity with the cpu GEMMs). fast_bf16 / fast_f16:
// CUBLAS_COMPUTE_32F_FAST_16BF / _FAST_16F over fp32 operands (the simulation rounds them to
// nearest even, as the cpu kernels do; the library may also keep more precision).
enum class lt_compute : std::uint8_t { f32, fast_bf16, fast_f16 };
// none: CUBLASLT_EPILOGUE_DEFAULT. bias: CUBLASLT_EPILOGUE_BIAS, bias [m] fp32, dense.
enum class lt_epilogue : std::uint8_t { none, bias };

struct lt_gemm {
  int m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  lt_type ab_type = lt_type::f32;
  lt_compute compute = lt_compute::f32;
  const void* a = nullptr;
  int lda = 0;
  const void* b = nullptr;
  int ldb = 0;
  float* c = nullptr;  // C and D
  int ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
  lt_epilogue epilogue = lt_epilogue::none;
  const float* bias = nullptr;  // [m] where epilogue is bias
};

// Queues the matmul on current_stream() (GPU pointers); throws kernel_error where cuBLASLt
// refuses it or finds no algorithm.
namespace cuda {
void lt_matmul(const lt_gemm& g);
}  // namespace cuda
// Runs it at once on host pointers; throws kernel_error where cuBLASLt would return
// CUBLAS_STATUS_INVALID_VALUE (a leading dimension under the stored rows, a size under 1, a
// missing pointer).
namespace cuda_sim {
void lt_matmul(const lt_gemm& g);
}  // namespace cuda_sim

}  // namespace zf::kernels
