#pragma once
// Private to the matmul family: the libraries behind kernels::cpu::gemm_with (gemm_lib.hpp).
// Every function takes normalised arguments: m, n, k > 0 and real leading dimensions (row
// strides in elements of the stored matrices: a is [m, k] or, transposed, [k, m]; b is [k, n] or
// [n, k]; c is [m, n]).
#include <cstdint>

#include "kernels/gemm_lib.hpp"

namespace zf::kernels::cpu::backend {

void openblas_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                    const float* b, int ldb, float beta, float* c, int ldc);
// oneDNN matmul, f32 in and out.
void onednn_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                  const float* b, int ldb, float beta, float* c, int ldc);
// oneDNN matmul, bf16 in (raw bits), f32 out.
void onednn_bf16(bool ta, bool tb, int m, int n, int k, float alpha, const std::uint16_t* a,
                 int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc);
// The stored rows x cols fp32 matrix (row stride ld) -> dense bf16 [rows, cols], by oneDNN's
// reorder (threaded, round to nearest even).
void onednn_to_bf16(const float* src, int rows, int cols, int ld, std::uint16_t* dst);
// True when libblis could be loaded (dlopen, once per process).
bool blis_loaded() noexcept;
void blis_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                const float* b, int ldb, float beta, float* c, int ldc);
// Threads the libraries use for the next GEMM on this thread (kernels::num_threads()).
void sync_library_threads();

}  // namespace zf::kernels::cpu::backend

namespace zf::kernels::cpu {
// gemm_with after its checks: library l at precision p on normalised arguments (the 16-bit
// precisions round op(a) and op(b) into per-thread scratch first).
void gemm_run(gemm_lib l, precision p, bool ta, bool tb, int m, int n, int k, float alpha,
              const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
}  // namespace zf::kernels::cpu
