// Matmul family, CUDA twin of matmul_cpu.cpp (and of cpu::round_bf16 / cpu::gemm_bf16) with the
// same contracts on GPU pointers. The GEMMs are cuBLASLt's: each call is translated here from the
// row-major arguments into one column-major lt_gemm (kernels/cublaslt_plan.hpp) and run by
// lt_matmul: cuBLASLt on a GPU (gemm_cuda.cu), its host definition in the simulation
// (gemm_sim.cpp), so the translation is tested against the cpu kernels on every build. The
// small kernels (bf16 rounding, the bias gradient, the k = 0 GEMM) are ours.
// Invariants: row-major everywhere; a leading dimension of 0 means the dense width of the stored
// matrix (k or m for a, n or k for b, n for c); everything is queued on current_stream() and
// nothing waits. The bias gradient sums in a fixed order (deterministic, no atomics).
// Numerics: fp32 accumulation. gemm follows compute_precision() (kernels/gemm_lib.hpp) as the
// cpu gemm does: under bf16 / f16 cuBLAS may round op(a) and op(b) to the 16-bit type
// (CUBLAS_COMPUTE_32F_FAST_16BF / _16F) or keep more precision; the simulation rounds them to
// nearest even, exactly as the cpu kernel.
#include "kernels/cublaslt_plan.hpp"
#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/gemm_lib.hpp"
#include "kernels/matmul.hpp"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kMaxBlocks = 4096;
// Bias gradient: a block owns kGradCols columns (one per lane: a warp reads 128 contiguous
// bytes of a row) and its kGradWarps warps split the rows.
constexpr int kGradCols = 32;
constexpr int kGradWarps = 32;

// Four floats in, four bf16 out, as single 16- and 8-byte accesses (the vector types of
// cuda_runtime.h, which the simulation lacks).
struct alignas(16) f32x4 {
  float v[4];
};
struct alignas(8) u16x4 {
  std::uint16_t v[4];
};

// c [m, n] (row stride ldc) = beta * c (0 where beta is 0: c is not read) + bias[j] on column j
// (bias [n] or nullptr): a GEMM whose k is 0.
__global__ void scale_bias_kernel(float* __restrict__ c, int m, int n, int ldc, float beta,
                                  const float* __restrict__ bias) {
  const std::size_t total = static_cast<std::size_t>(m) * n;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t e = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += stride) {
    const std::size_t i = e / n, j = e - i * n;
    float& x = c[i * ldc + j];
    float v = beta == 0.0f ? 0.0f : x * beta;
    if (bias != nullptr) v += bias[j];
    x = v;
  }
}

// dst [rows, cols] dense bf16 bits = x [rows, cols] (row stride ld) rounded to nearest even.
__global__ void round_bf16_kernel(const float* __restrict__ x, int rows, int cols, int ld,
                                  std::uint16_t* __restrict__ dst) {
  const std::size_t total = static_cast<std::size_t>(rows) * cols;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t e = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += stride) {
    const std::size_t r = e / cols, c = e - r * cols;
    dst[e] = f32_to_bf16(x[r * ld + c]);
  }
}

// The same four elements at a time: cols and ld multiples of
// 4, x 16-byte and dst 8-byte aligned. quads = rows * cols / 4.
__global__ void round_bf16_x4_kernel(const f32x4* __restrict__ x, int cols4, int ld4,
                                     std::size_t quads, u16x4* __restrict__ dst) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t e = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < quads;
       e += stride) {
    const std::size_t r = e / cols4, c = e - r * cols4;
    const f32x4 v = x[r * ld4 + c];
    u16x4 o;
    for (int q = 0; q < 4; ++q) o.v[q] = f32_to_bf16(v.v[q]);
    dst[e] = o;
  }
}

// db [oc] += column sums of dy [n, oc]. Block (kGradCols, kGradWarps): warp w sums rows w,
// w + kGradWarps, ... of its lane's column in order, then warp 0 adds the kGradWarps partials in
// warp order: a fixed order, so the same dy gives the same db bits every run.
__global__ void __launch_bounds__(kGradCols* kGradWarps)
    bias_grad_kernel(const float* __restrict__ dy, float* __restrict__ db, int n, int oc) {
  __shared__ float part[kGradWarps][kGradCols + 1];
  const int lane = static_cast<int>(threadIdx.x), w = static_cast<int>(threadIdx.y);
  const int col = static_cast<int>(blockIdx.x) * kGradCols + lane;
  float s = 0.0f;
  if (col < oc) {
    const std::size_t step = static_cast<std::size_t>(kGradWarps) * oc;
    const float* p = dy + static_cast<std::size_t>(w) * oc + col;
    int r = w;
    // Four loads in flight per thread, added in row order.
    for (; r + 3 * kGradWarps < n; r += 4 * kGradWarps, p += 4 * step) {
      const float a0 = p[0], a1 = p[step], a2 = p[2 * step], a3 = p[3 * step];
      s += a0;
      s += a1;
      s += a2;
      s += a3;
    }
    for (; r < n; r += kGradWarps, p += step) s += *p;
  }
  part[w][lane] = s;
  __syncthreads();
  if (w == 0 && col < oc) {
    float t = 0.0f;
    for (int i = 0; i < kGradWarps; ++i) t += part[i][lane];
    db[col] += t;
  }
}

lt_compute compute_for(precision p) {
  return p == precision::bf16  ? lt_compute::fast_bf16
         : p == precision::f16 ? lt_compute::fast_f16
                               : lt_compute::f32;
}

// Row-major c [m, n] (row stride ldc) = alpha * op(a) @ op(b) + beta * c (+ bias[j] on column j)
// as cuBLASLt's column-major call; m, n, k >= 1 and the leading dimensions resolved. A row-major
// [r, c] matrix with row stride ld, read column-major, is its transpose [c, r] with leading
// dimension ld, so cuBLASLt computes c^T [n, m] = op(b)^T @ op(a)^T: its A is our b (transposed
// where b is), its B our a, its m our n, and its bias (one per row of its D) runs along our
// columns.
lt_gemm plan_row_major(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const void* a,
                       int lda, const void* b, int ldb, float beta, float* c, int ldc, lt_type t,
                       lt_compute cp, const float* bias) {
  lt_gemm g;
  g.m = n;
  g.n = m;
  g.k = k;
  g.trans_a = trans_b;
  g.trans_b = trans_a;
  g.ab_type = t;
  g.compute = cp;
  g.a = b;
  g.lda = ldb;
  g.b = a;
  g.ldb = lda;
  g.c = c;
  g.ldc = ldc;
  g.alpha = alpha;
  g.beta = beta;
  g.epilogue = bias != nullptr ? lt_epilogue::bias : lt_epilogue::none;
  g.bias = bias;
  return g;
}

// gemm's contract over operands of type t (elements of a and b: fp32 or bf16 bits), plus an
// optional bias [n] added to every row of c.
void gemm_typed(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const void* a,
                int lda, const void* b, int ldb, float beta, float* c, int ldc, lt_type t,
                lt_compute cp, const float* bias) {
  if (m <= 0 || n <= 0) return;
  if (ldc == 0) ldc = n;
  if (k <= 0) {  // op(a) @ op(b) is empty: the beta scaling (and the bias) remain
    if (beta == 1.0f && bias == nullptr) return;
    const std::size_t total = static_cast<std::size_t>(m) * n;
    ZF_LAUNCH(scale_bias_kernel, grid_for(total, kBlock, kMaxBlocks), kBlock, 0)
    (c, m, n, ldc, beta, bias);
    check_launch("gemm (k = 0) launch");
    return;
  }
  if (lda == 0) lda = trans_a ? m : k;
  if (ldb == 0) ldb = trans_b ? k : n;
  lt_matmul(
      plan_row_major(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, t, cp, bias));
}

// db [oc] += column sums of dy [n, oc].
void bias_grad(const float* dy, float* db, int n, int oc) {
  const unsigned blocks = static_cast<unsigned>((oc + kGradCols - 1) / kGradCols);
  ZF_LAUNCH(bias_grad_kernel, blocks, dim3(kGradCols, kGradWarps), 0)(dy, db, n, oc);
  check_launch("linear_backward bias gradient launch");
}

}  // namespace

// x: [rows, cols] (row stride ld, 0 = cols) -> dst: [rows, cols] dense bf16 bits.
void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst) {
  if (rows <= 0 || cols <= 0) return;
  if (ld == 0) ld = cols;
  const std::size_t total = static_cast<std::size_t>(rows) * cols;
  const bool x4 = cols % 4 == 0 && ld % 4 == 0 && reinterpret_cast<std::uintptr_t>(x) % 16 == 0 &&
                  reinterpret_cast<std::uintptr_t>(dst) % 8 == 0;
  if (x4) {
    ZF_LAUNCH(round_bf16_x4_kernel, grid_for(total / 4, kBlock, kMaxBlocks), kBlock, 0)
    (reinterpret_cast<const f32x4*>(x), cols / 4, ld / 4, total / 4, reinterpret_cast<u16x4*>(dst));
  } else {
    ZF_LAUNCH(round_bf16_kernel, grid_for(total, kBlock, kMaxBlocks), kBlock, 0)
    (x, rows, cols, ld, dst);
  }
  check_launch("round_bf16 launch");
}

// c: [m, n] = alpha * op(a) @ op(b) + beta * c; op(a): [m, k], op(b): [k, n]; fp32, at the
// thread's compute precision.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  gemm_typed(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, lt_type::f32,
             compute_for(compute_precision()), nullptr);
}

// The same over bf16 operands (raw bits), fp32 accumulation into the fp32 c.
void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc) {
  gemm_typed(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, lt_type::bf16,
             lt_compute::f32, nullptr);
}

// x: [n, ic], w: [ic, oc], b: [oc] or nullptr -> y: [n, oc] (overwritten); the bias rides the
// GEMM's epilogue (CUBLASLT_EPILOGUE_BIAS) instead of a pass over y.
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc) {
  gemm_typed(false, false, n, oc, ic, 1.0f, x, ic, w, oc, 0.0f, y, oc, lt_type::f32,
             compute_for(compute_precision()), b);
}

// dy: [n, oc]; dx: [n, ic] overwritten (optional); dw: [ic, oc] and db: [oc] accumulated
// (optional). At a 16-bit compute precision both GEMMs round their operands (gemm above), the
// numbers of the cpu kernel's rounded path.
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc) {
  if (dx != nullptr) gemm(false, true, n, ic, oc, 1.0f, dy, oc, w, oc, 0.0f, dx, ic);
  if (dw != nullptr) gemm(true, false, ic, oc, n, 1.0f, x, ic, dy, oc, 1.0f, dw, oc);
  if (db != nullptr && n > 0 && oc > 0) bias_grad(dy, db, n, oc);
}

// x16: [n, ic], w16: [ic, oc] bf16; dy: [n, oc] -> dx [n, ic] overwritten, dw [ic, oc] and
// db [oc] accumulated. dy is rounded once for both GEMMs into stream-ordered scratch
// (cudaMallocAsync: the contract gives none; the stream's pool reuses the freed block on the next
// call, until a synchronisation returns memory above the pool's release threshold to the driver).
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc) {
  if (n > 0 && ic > 0 && oc > 0 && (dx != nullptr || dw != nullptr)) {
    cudaStream_t st = current_stream();
    std::uint16_t* d16 = nullptr;
    check(cudaMallocAsync(reinterpret_cast<void**>(&d16),
                          static_cast<std::size_t>(n) * oc * sizeof(std::uint16_t), st),
          "linear_backward_bf16 scratch");
    try {
      round_bf16(dy, n, oc, oc, d16);
      if (dx != nullptr) gemm_bf16(false, true, n, ic, oc, 1.0f, d16, oc, w16, oc, 0.0f, dx, ic);
      if (dw != nullptr) gemm_bf16(true, false, ic, oc, n, 1.0f, x16, ic, d16, oc, 1.0f, dw, oc);
    } catch (...) {
      (void)cudaFreeAsync(d16, st);
      throw;
    }
    check(cudaFreeAsync(d16, st), "linear_backward_bf16 scratch free");
  }
  if (db != nullptr && n > 0 && oc > 0) bias_grad(dy, db, n, oc);
}

}  // namespace zf::kernels::ZF_CUDA_NS
