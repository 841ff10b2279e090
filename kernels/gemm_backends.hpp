#pragma once
// Private to the matmul family: the libraries behind kernels::cpu::gemm_with (gemm_lib.hpp).
// Every function takes normalised arguments: m, n, k > 0 and real leading dimensions (row
// strides in elements of the stored matrices: a is [m, k] or, transposed, [k, m]; b is [k, n] or
// [n, k]; c is [m, n]).
#include <cstddef>
#include <cstdint>
#include <vector>

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
// One operand of a batched matmul: element (i, r, c) of [batch, rows, cols] lives at
// data + i * batch + r * row + c * col (elements; a transpose is a swap of row and col).
struct strided {
  const void* data;
  std::int64_t batch, row, col;
};
// c[i] = alpha * a[i] @ b[i] + beta * c[i] for i in [0, batch): a [m, k], b [k, n], both bf16
// (raw bits) or both f32; c f32 at c + i * c_batch + r * c_row + col. One oneDNN matmul
// primitive per shape and strides, cached per thread.
void onednn_batched(bool bf16, int batch, int m, int n, int k, float alpha, strided a, strided b,
                    float beta, float* c, std::int64_t c_batch, std::int64_t c_row);
// dst = src over a [dims[0], dims[1], dims[2]] tensor, each side f32 or bf16 (raw bits) with its
// own strides (elements): gathers strided views into dense ones and back, rounding to nearest
// even into bf16. oneDNN reorder, cached per thread.
void onednn_copy3(const std::int64_t dims[3], const void* src, bool src_bf16,
                  const std::int64_t src_strides[3], void* dst, bool dst_bf16,
                  const std::int64_t dst_strides[3]);
// The stored rows x cols fp32 matrix (row stride ld) -> dense bf16 [rows, cols], by oneDNN's
// reorder (threaded, round to nearest even).
void onednn_to_bf16(const float* src, int rows, int cols, int ld, std::uint16_t* dst);
// True when libblis could be loaded (dlopen, once per process).
bool blis_loaded() noexcept;
void blis_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                const float* b, int ldb, float beta, float* c, int ldc);
// Threads the libraries use for the next GEMM on this thread (kernels::num_threads(); 1 inside
// an OpenMP team), returned so that cached plans can key on it.
int sync_library_threads();

}  // namespace zf::kernels::cpu::backend

namespace zf::kernels::cpu {
// v's storage, grown to at least n elements (per-thread scratch: allocated once, then reused).
template <class T>
T* grown(std::vector<T>& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// gemm_with after its checks: library l at precision p on normalised arguments (the 16-bit
// precisions round op(a) and op(b) into per-thread scratch first).
void gemm_run(gemm_lib l, precision p, bool ta, bool tb, int m, int n, int k, float alpha,
              const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
}  // namespace zf::kernels::cpu
