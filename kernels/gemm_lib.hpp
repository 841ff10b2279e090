#pragma once
// GEMM libraries and compute precision (issue 16). kernels::gemm (matmul.hpp) stays the one GEMM
// the model calls; this header says which library runs it and in which precision.
//
// Precision (per thread, like the batch-invariant mode of dispatch.hpp): f32 unless set. Under
// bf16 or f16 every kernels::gemm rounds op(a) and op(b) to the 16-bit type (round to nearest
// even) and multiplies them with fp32 accumulation into the fp32 c: mixed precision's compute,
// with fp32 master weights, outputs and everything outside the GEMMs. bf16 runs oneDNN's bf16
// matmul (AMX / AVX-512 BF16 where the CPU has them); f16 has no CPU GEMM in oneDNN 2.6, so its
// inputs are rounded to f16 and multiplied by the fp32 GEMM (the same numbers as an f16 GEMM with
// fp32 accumulation: every f16 product is exact in fp32).
//
// Libraries: OpenBLAS (cblas_sgemm, the reference), oneDNN (matmul primitives, cached per shape
// and thread; f32 and bf16) and BLIS (bli_sgemm, loaded with dlopen when libblis is installed, so
// its BLAS symbols never interpose OpenBLAS's). Which one a GEMM uses comes from the tuning table
// (gemm_table.hpp) where one is loaded, else the defaults: OpenBLAS for f32, oneDNN for bf16.
#include <cstddef>
#include <cstdint>

namespace zf::kernels {

enum class precision : std::uint8_t { f32, bf16, f16 };
// "f32" / "bf16" / "f16".
const char* precision_name(precision p) noexcept;
// nullopt-free parse: false when `s` names none.
bool parse_precision(const char* s, precision& out) noexcept;

precision compute_precision() noexcept;
void set_compute_precision(precision p) noexcept;
class precision_scope {
 public:
  explicit precision_scope(precision p) : prev_(compute_precision()) { set_compute_precision(p); }
  ~precision_scope() { set_compute_precision(prev_); }
  precision_scope(const precision_scope&) = delete;
  precision_scope& operator=(const precision_scope&) = delete;

 private:
  precision prev_;
};

enum class gemm_lib : std::uint8_t { openblas, onednn, blis };
constexpr int gemm_lib_count = 3;
const char* gemm_lib_name(gemm_lib l) noexcept;
bool parse_gemm_lib(const char* s, gemm_lib& out) noexcept;
// Whether library l can run GEMMs of precision p in this process (BLIS: libblis found at run
// time; f16 runs on any library that runs f32).
bool gemm_lib_available(gemm_lib l, precision p) noexcept;

// oneDNN runs on libgomp, whose threads here fall asleep between parallel regions unless told to
// spin (OMP_DISPLAY_ENV shows PASSIVE on this 2-vCPU VM), and waking a sleeping vCPU costs ~6 ms:
// every oneDNN call took 5-8 ms whatever its size (measured: 0.1 ms with GOMP_SPINCOUNT=300000,
// libgomp's documented default). libgomp reads its environment when it loads, before main, so
// a process that wants fast oneDNN calls sets GOMP_SPINCOUNT=300000 and re-executes itself once
// (/proc/self/exe with the same arguments) when neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY is
// set; if the exec fails it goes on as it is. Call first thing in main (or a static initialiser).
void ensure_openmp_spin() noexcept;

namespace cpu {
// c [m, n] (row stride ldc) = alpha * op(a) @ op(b) + beta * c with library l at precision p;
// a, b, c fp32 as kernels::gemm (leading dimension 0 = dense). Throws kernel_error when l cannot
// run p here.
void gemm_with(gemm_lib l, precision p, bool trans_a, bool trans_b, int m, int n, int k,
               float alpha, const float* a, int lda, const float* b, int ldb, float beta, float* c,
               int ldc);

// The same with a and b already bf16 (raw bits, row-major, leading dimensions in elements, 0 =
// dense): for callers that keep weights in bf16 (serving). oneDNN; c stays fp32.
void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc);

// Whether GEMMs of precision p may run one per thread inside an OpenMP team (parallel.hpp),
// through gemm_run(process_gemm_lib(p), p, ...): true when that library is oneDNN, which plans
// and runs on its caller alone there. OpenBLAS and BLIS keep pools of their own threads, which
// two callers at once would contend for, so their callers stay on one thread.
bool gemm_nests(precision p);
bool gemm_nests(gemm_lib l) noexcept;  // the rule itself, for a library already looked up

// fp32 [n] -> bf16 [n] (round to nearest even), vectorised where the CPU has AVX-512 BF16.
void to_bf16(const float* src, std::uint16_t* dst, std::size_t n);
}  // namespace cpu

}  // namespace zf::kernels
