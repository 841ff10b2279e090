// cuda_sim::lt_matmul: an lt_gemm (kernels/cublaslt_plan.hpp) executed on the host exactly as
// cuBLASLt defines it (column-major, op, leading dimensions, alpha/beta, the bias epilogue), so
// the matmul twins' translation from row-major arguments is checked against the cpu kernels on
// every build. Each output is one fp32 dot product over k in order: the accumulation of any GEMM
// up to summation order. Host code, not a kernel: a GEMM on fibers would only be slower.
#include <string>
#include <vector>

#include "kernels/convert.hpp"
#include "kernels/cublaslt_plan.hpp"
#include "kernels/dispatch.hpp"

namespace zf::kernels::cuda_sim {
namespace {

// op(X)(r, c) of a stored operand (X(r, c), or X(c, r) where transposed), widened to fp32 and
// rounded as the compute type allows.
float op_at(const lt_gemm& g, const void* x, bool trans, int ld, int r, int c) {
  const std::size_t row = static_cast<std::size_t>(trans ? c : r);
  const std::size_t at =
      row + static_cast<std::size_t>(trans ? r : c) * static_cast<std::size_t>(ld);
  if (g.ab_type == lt_type::bf16) return bf16_to_f32(static_cast<const std::uint16_t*>(x)[at]);
  const float v = static_cast<const float*>(x)[at];
  if (g.compute == lt_compute::fast_bf16) return bf16_to_f32(f32_to_bf16(v));
  if (g.compute == lt_compute::fast_f16) return f16_to_f32(f32_to_f16(v));
  return v;
}

[[noreturn]] void invalid(const char* why) {
  throw kernel_error(std::string("cuda_sim lt_matmul: CUBLAS_STATUS_INVALID_VALUE (") + why + ")");
}

// cuBLASLt's argument checks: sizes, stored rows within the leading dimensions, pointers.
void validate(const lt_gemm& g) {
  if (g.m < 1 || g.n < 1 || g.k < 1) invalid("m, n and k must be at least 1");
  const int a_rows = g.trans_a ? g.k : g.m, b_rows = g.trans_b ? g.n : g.k;
  if (g.lda < a_rows) invalid("lda under A's stored rows");
  if (g.ldb < b_rows) invalid("ldb under B's stored rows");
  if (g.ldc < g.m) invalid("ldc under m");
  if (g.a == nullptr || g.b == nullptr || g.c == nullptr) invalid("a null matrix");
  if (g.epilogue == lt_epilogue::bias && g.bias == nullptr) invalid("bias epilogue without bias");
  if (g.ab_type == lt_type::bf16 && g.compute != lt_compute::f32)
    invalid("bf16 operands take CUBLAS_COMPUTE_32F");
}

}  // namespace

void lt_matmul(const lt_gemm& g) {
  validate(g);
  // The rows of op(A) [m, k] and the columns of op(B) [k, n], each k contiguous floats.
  const std::size_t k = static_cast<std::size_t>(g.k);
  std::vector<float> a_rows(static_cast<std::size_t>(g.m) * k),
      b_cols(static_cast<std::size_t>(g.n) * k);
  for (int i = 0; i < g.m; ++i)
    for (int p = 0; p < g.k; ++p) a_rows[i * k + p] = op_at(g, g.a, g.trans_a, g.lda, i, p);
  for (int j = 0; j < g.n; ++j)
    for (int p = 0; p < g.k; ++p) b_cols[j * k + p] = op_at(g, g.b, g.trans_b, g.ldb, p, j);
  for (int j = 0; j < g.n; ++j) {
    for (int i = 0; i < g.m; ++i) {
      const float* ai = a_rows.data() + i * k;
      const float* bj = b_cols.data() + j * k;
      float acc = 0.0f;
      for (std::size_t p = 0; p < k; ++p) acc += ai[p] * bj[p];
      float& d = g.c[i + static_cast<std::size_t>(j) * static_cast<std::size_t>(g.ldc)];
      float v = g.alpha * acc;
      if (g.beta != 0.0f) v += g.beta * d;  // beta == 0: C is not read (NaN there stays out)
      if (g.epilogue == lt_epilogue::bias) v += g.bias[i];
      d = v;
    }
  }
}

}  // namespace zf::kernels::cuda_sim
