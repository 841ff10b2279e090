#pragma once
// Matmul family: fp32 GEMMs on raw row-major pointers. The CPU reference is OpenBLAS (cblas_sgemm).
// Linear layers use the Hugging Face GPT-2 Conv1D layout: weight w is [in, out], so y = x @ w + b.
#include <cstddef>
#include <cstdint>

namespace zf::kernels {

// c[m,n] = alpha * op(a) @ op(b) + beta * c. op(a) is [m,k]; op(b) is [k,n].
// lda/ldb/ldc are row strides in elements (0 means dense: the natural width).
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// x: [n, ic], w: [ic, oc], b: [oc] or nullptr  ->  y: [n, oc] (overwritten).
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc);

// dy: [n, oc]. dx: [n, ic] OVERWRITTEN with dy @ w^T (skipped when dx is nullptr).
// dw: [ic, oc] ACCUMULATED (+= x^T @ dy); db: [oc] ACCUMULATED (+= sum over rows of dy), may be
// null.
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc);

// Mixed precision with operands rounded once and reused (issue 16: the LM head's weight and its
// logit gradient each feed two GEMMs, 77 and 103 MB of bf16 at GPT-2's shape, which the bf16
// gemm would otherwise round again per call and in slices). round_bf16: the stored [rows, cols]
// fp32 matrix x (row stride ld, 0 = dense) -> dense bf16 bits dst [rows, cols], round to
// nearest even. gemm_bf16: gemm's contract over such operands (leading dimensions in elements),
// fp32 accumulation into the fp32 c.
void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst);
void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc);
// linear_backward's contract over operands the forward rounded already (bf16 training keeps a
// linear's rounded input x16 [n, ic] and weight w16 [ic, oc] from its forward): dy is rounded
// once for both GEMMs; dx (not null) overwritten, dw (not null) and db (may be null)
// accumulated, all fp32. The same bits as linear_backward at bf16 precision.
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst);
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc);
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc);
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc);
}  // namespace cpu

// kernels/matmul_cuda.cu: GPU pointers, queued on current_stream() (cuda_compat.cuh), GEMMs
// through cuBLASLt (kernels/cublaslt_plan.hpp); gemm honours compute_precision() as the cpu one
// does. cpu::gemm_bf16 is declared in kernels/gemm_lib.hpp.
namespace cuda {
void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst);
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc);
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc);
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc);
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc);
}  // namespace cuda
// matmul_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp; tests), host pointers.
namespace cuda_sim {
void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst);
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc);
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc);
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc);
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc);
}  // namespace cuda_sim

}  // namespace zf::kernels
