// cuda::lt_matmul: one lt_gemm (kernels/cublaslt_plan.hpp, column-major) through cuBLASLt on
// current_stream(). Host code only (no kernels of ours), so it has no simulation twin:
// gemm_sim.cpp executes the same definition on the host for the tests.
// Per thread, device and stream: a cuBLASLt handle, a 32 MiB workspace allocated once (a
// workspace must not be shared by matmuls that may run at the same time, i.e. on two streams)
// and the plans already made: matmul and layout descriptors plus the heuristic's algorithm,
// keyed by everything they depend on (shape, ops, types, leading dimensions, epilogue and the
// data's alignment), so a repeated GEMM costs one cublasLtMatmul call.
// Compute types: CUBLAS_COMPUTE_32F for fp32 (no TF32: parity with the cpu GEMMs) and for bf16
// operands (fp32 accumulation into fp32 C/D); *_FAST_16BF / *_FAST_16F where the caller's
// compute precision asks for 16-bit GEMMs over fp32 operands.
#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "kernels/cublaslt_plan.hpp"
#include "kernels/cuda_compat.cuh"

namespace zf::kernels::cuda {
namespace {

constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;  // Hopper's recommended size
constexpr std::size_t kMaxPlans = 512;  // dropped all at once beyond this (shapes vary in serving)

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw kernel_error(std::string("cublasLt ") + what + ": " + cublasLtGetStatusString(s));
  }
}

// The alignment in bytes (a power of two, at most 256) of every column of a matrix: of its
// pointer and of its column stride. The heuristic assumes 256 unless told, and an algorithm that
// needs more than the data has fails or faults; a sliced operand (c + j0) or an odd leading
// dimension has less.
std::uint32_t alignment_of(const void* p, std::int64_t ld, std::size_t elem_bytes) {
  const std::uint64_t v = reinterpret_cast<std::uintptr_t>(p) |
                          static_cast<std::uint64_t>(ld) * elem_bytes | std::uint64_t{256};
  return static_cast<std::uint32_t>(v & (~v + 1));
}

cudaDataType_t data_type(lt_type t) {
  return t == lt_type::bf16 ? CUDA_R_16BF : CUDA_R_32F;
}
cublasComputeType_t compute_type(lt_compute c) {
  return c == lt_compute::fast_bf16  ? CUBLAS_COMPUTE_32F_FAST_16BF
         : c == lt_compute::fast_f16 ? CUBLAS_COMPUTE_32F_FAST_16F
                                     : CUBLAS_COMPUTE_32F;
}

// Everything a plan depends on; its entries k_align_a.. are the alignments the heuristic is told.
using plan_key = std::array<std::int64_t, 15>;
constexpr int k_align_a = 11, k_align_b = 12, k_align_c = 13;

plan_key key_of(const lt_gemm& g) {
  const std::size_t eb = g.ab_type == lt_type::bf16 ? 2 : 4;
  return {g.m,
          g.n,
          g.k,
          g.trans_a,
          g.trans_b,
          static_cast<std::int64_t>(g.ab_type),
          static_cast<std::int64_t>(g.compute),
          g.lda,
          g.ldb,
          g.ldc,
          static_cast<std::int64_t>(g.epilogue),
          alignment_of(g.a, g.lda, eb),
          alignment_of(g.b, g.ldb, eb),
          alignment_of(g.c, g.ldc, 4),
          g.epilogue == lt_epilogue::bias ? alignment_of(g.bias, 0, 4) : 0};
}

// One planned matmul: its descriptors (C and D share a layout: the same buffer) and algorithm.
struct lt_plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  lt_plan() = default;
  lt_plan(const lt_plan&) = delete;
  lt_plan& operator=(const lt_plan&) = delete;
  ~lt_plan() {
    if (c != nullptr) (void)cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) (void)cublasLtMatmulDescDestroy(op);
  }
};

struct lt_context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<plan_key, std::unique_ptr<lt_plan>> plans;
  lt_context() = default;
  lt_context(const lt_context&) = delete;
  lt_context& operator=(const lt_context&) = delete;
  ~lt_context() {  // at thread exit; errors (a runtime already shut down) are moot then
    plans.clear();
    if (workspace != nullptr) (void)cudaFree(workspace);
    if (handle != nullptr) (void)cublasLtDestroy(handle);
  }
};

// This thread's context for the current device and stream, made on first use.
lt_context& context_for(cudaStream_t stream) {
  thread_local std::map<std::pair<int, cudaStream_t>, std::unique_ptr<lt_context>> contexts;
  int device = 0;
  check(cudaGetDevice(&device), "lt_matmul device");
  std::unique_ptr<lt_context>& ctx = contexts[{device, stream}];
  if (!ctx) {
    auto fresh = std::make_unique<lt_context>();
    check_lt(cublasLtCreate(&fresh->handle), "create");
    check(cudaMalloc(&fresh->workspace, kWorkspaceBytes), "lt_matmul workspace");
    ctx = std::move(fresh);
  }
  return *ctx;
}

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v) {
  check_lt(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v), "matmul desc attribute");
}
template <class T>
void set_pref(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, const T& v) {
  check_lt(cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof v), "preference attribute");
}

// Descriptors and the heuristic's first algorithm for g (its bias pointer already set: the
// heuristic reads its alignment).
std::unique_ptr<lt_plan> make_plan(const lt_context& ctx, const lt_gemm& g, const plan_key& key) {
  auto p = std::make_unique<lt_plan>();
  check_lt(cublasLtMatmulDescCreate(&p->op, compute_type(g.compute), CUDA_R_32F), "matmul desc");
  set_desc(p->op, CUBLASLT_MATMUL_DESC_TRANSA,
           static_cast<std::int32_t>(g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
  set_desc(p->op, CUBLASLT_MATMUL_DESC_TRANSB,
           static_cast<std::int32_t>(g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
  if (g.epilogue == lt_epilogue::bias) {
    set_desc(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
             static_cast<std::uint32_t>(CUBLASLT_EPILOGUE_BIAS));
    set_desc(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<std::int32_t>(CUDA_R_32F));
    set_desc(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(g.bias));
  }
  const cudaDataType_t t = data_type(g.ab_type);
  // Stored shapes: A is [m, k] or, transposed, [k, m]; B is [k, n] or [n, k]; C/D [m, n].
  check_lt(
      cublasLtMatrixLayoutCreate(&p->a, t, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda),
      "layout A");
  check_lt(
      cublasLtMatrixLayoutCreate(&p->b, t, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb),
      "layout B");
  check_lt(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, g.m, g.n, g.ldc), "layout C");

  cublasLtMatmulPreference_t pref = nullptr;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
  try {
    set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
             static_cast<std::uint64_t>(kWorkspaceBytes));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
             static_cast<std::uint32_t>(key[k_align_a]));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
             static_cast<std::uint32_t>(key[k_align_b]));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
             static_cast<std::uint32_t>(key[k_align_c]));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
             static_cast<std::uint32_t>(key[k_align_c]));
    s = cublasLtMatmulAlgoGetHeuristic(ctx.handle, p->op, p->a, p->b, p->c, p->c, pref, 1, &result,
                                       &found);
  } catch (...) {
    (void)cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  (void)cublasLtMatmulPreferenceDestroy(pref);
  check_lt(s, "heuristic");
  if (found == 0) {
    throw kernel_error("cublasLt: no algorithm for the " + std::to_string(g.m) + "x" +
                       std::to_string(g.n) + "x" + std::to_string(g.k) + " matmul");
  }
  p->algo = result.algo;
  return p;
}

}  // namespace

void lt_matmul(const lt_gemm& g) {
  cudaStream_t stream = current_stream();
  lt_context& ctx = context_for(stream);
  const plan_key key = key_of(g);
  auto it = ctx.plans.find(key);
  if (it == ctx.plans.end()) {
    if (ctx.plans.size() >= kMaxPlans) ctx.plans.clear();
    it = ctx.plans.emplace(key, make_plan(ctx, g, key)).first;
  } else if (g.epilogue == lt_epilogue::bias) {
    // The plan fixes the bias's alignment, not its address.
    set_desc(it->second->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(g.bias));
  }
  const lt_plan& p = *it->second;
  check_lt(cublasLtMatmul(ctx.handle, p.op, &g.alpha, g.a, p.a, g.b, p.b, &g.beta, g.c, p.c, g.c,
                          p.c, &p.algo, ctx.workspace, kWorkspaceBytes, stream),
           "matmul");
}

}  // namespace zf::kernels::cuda
