#pragma once
// Batch-invariant GEMM: every output element is computed by the same sequence of floating-point
// operations whatever the number of rows (m), the other columns (n) or the threads, so a token's
// numbers do not depend on which batch it rode in (serving's --batch-invariant, score mode).
// OpenBLAS promises no such thing (its kernels and blockings may change with the shape), so
// this is our own: row-major, alpha = 1, beta 0 or 1.
//   not transposed b:  c[i,j] = fma-chain over k = 0..K-1 of a[i,k] * b[k,j], starting from
//                      beta c[i,j] (one fused multiply-add per k, in k order; k blocks continue
//                      the chain through c)
//   transposed b:      c[i,j] = (beta c[i,j]) + dot(a[i,:], b[j,:]) with a fixed 8-lane split
//                      and a fixed final reduction (both rows contiguous)
// Nothing here allocates.
namespace zf::kernels {

// c[m,n] = a[m,k] @ op(b) + beta * c, beta in {0, 1}. b: [k, n] (trans_b false) or [n, k]
// (trans_b true). lda/ldb/ldc: row strides in elements (0 = dense).
void gemm_invariant(bool trans_b, int m, int n, int k, const float* a, int lda, const float* b,
                    int ldb, float beta, float* c, int ldc);

namespace cpu {
void gemm_invariant(bool trans_b, int m, int n, int k, const float* a, int lda, const float* b,
                    int ldb, float beta, float* c, int ldc);
}  // namespace cpu

}  // namespace zf::kernels
