// The GEMM libraries and the compute precision of gemm_lib.hpp: names, the per-thread
// precision, OpenBLAS and BLIS behind one signature, and the 16-bit rounding of the operands.
// Scratch for the rounded operands is per thread and only grows (allocated once per run).
#include <cblas.h>
#include <dlfcn.h>
#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/gemm_backends.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/threads.hpp"

extern "C" {
void omp_set_num_threads(int);
int omp_in_parallel(void);
int omp_get_max_threads();
}

namespace zf::kernels {
namespace {
thread_local precision tl_precision = precision::f32;
}  // namespace

const char* precision_name(precision p) noexcept {
  switch (p) {
    case precision::bf16:
      return "bf16";
    case precision::f16:
      return "f16";
    default:
      return "f32";
  }
}
bool parse_precision(const char* s, precision& out) noexcept {
  for (precision p : {precision::f32, precision::bf16, precision::f16})
    if (std::strcmp(s, precision_name(p)) == 0) return out = p, true;
  if (std::strcmp(s, "fp32") == 0) return out = precision::f32, true;
  if (std::strcmp(s, "fp16") == 0) return out = precision::f16, true;
  return false;
}
precision compute_precision() noexcept {
  return tl_precision;
}
void set_compute_precision(precision p) noexcept {
  tl_precision = p;
}

const char* gemm_lib_name(gemm_lib l) noexcept {
  switch (l) {
    case gemm_lib::onednn:
      return "onednn";
    case gemm_lib::blis:
      return "blis";
    default:
      return "openblas";
  }
}
bool parse_gemm_lib(const char* s, gemm_lib& out) noexcept {
  for (int i = 0; i < gemm_lib_count; ++i)
    if (std::strcmp(s, gemm_lib_name(gemm_lib(i))) == 0) return out = gemm_lib(i), true;
  return false;
}
bool gemm_lib_available(gemm_lib l, precision p) noexcept {
  if (p == precision::bf16) return l == gemm_lib::onednn;
  return l != gemm_lib::blis || cpu::backend::blis_loaded();
}

void ensure_openmp_spin() noexcept {
  if (std::getenv("GOMP_SPINCOUNT") || std::getenv("OMP_WAIT_POLICY")) return;
  if (::setenv("GOMP_SPINCOUNT", "300000", 1) != 0) return;
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<char*> argv;
  for (std::size_t i = 0; i < all.size(); i += std::strlen(all.data() + i) + 1)
    argv.push_back(all.data() + i);
  if (argv.empty()) return;
  argv.push_back(nullptr);
  ::execv("/proc/self/exe", argv.data());  // returns only on failure: go on unchanged
}

namespace cpu {
namespace backend {
namespace {

// bli_sgemm of BLIS's typed API: trans_t is an int-sized enum (0 = no transpose), dim_t and
// inc_t are 64-bit in Debian's build (BLIS_INT_TYPE_SIZE 64).
using blis_sgemm_fn = void (*)(int, int, std::int64_t, std::int64_t, std::int64_t, const float*,
                               const float*, std::int64_t, std::int64_t, const float*, std::int64_t,
                               std::int64_t, const float*, float*, std::int64_t, std::int64_t);
using blis_threads_fn = void (*)(std::int64_t);
struct blis_lib {
  blis_sgemm_fn sgemm = nullptr;
  blis_threads_fn threads = nullptr;
};
// RTLD_LOCAL: libblis also exports cblas_sgemm / sgemm_, which must not interpose OpenBLAS's.
const blis_lib& blis() {
  static const blis_lib lib = [] {
    blis_lib l;
    void* h = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) return l;
    l.sgemm = reinterpret_cast<blis_sgemm_fn>(dlsym(h, "bli_sgemm"));
    l.threads = reinterpret_cast<blis_threads_fn>(dlsym(h, "bli_thread_set_num_threads"));
    if (!l.threads) l.sgemm = nullptr;
    return l;
  }();
  return lib;
}

}  // namespace

bool blis_loaded() noexcept {
  return blis().sgemm != nullptr;
}

int sync_library_threads() {
  // oneDNN and BLIS run OpenMP teams whose size is a per-thread setting: follow the kernels'
  // thread count (OpenBLAS's) on every thread that calls them, a rank thread included. Inside
  // an OpenMP team (a GEMM per thread: gemm_nests) oneDNN plans and runs on its caller alone.
  thread_local int applied = 0;
  const bool nested = omp_in_parallel() != 0;
  const int want = nested ? 1 : kernels::num_threads();
  if (applied == want) return want;
  omp_set_num_threads(want);
  if (blis_loaded() && !nested) blis().threads(want);
  applied = want;
  return want;
}

void openblas_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                    const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blis_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                const float* b, int ldb, float beta, float* c, int ldc) {
  if (!blis_loaded()) throw kernel_error("gemm: libblis.so.4 is not installed (libblis4)");
  sync_library_threads();
  // Transposes as strides: op(a)[i, p] lives at i * lda + p, or at p * lda + i when transposed.
  const std::int64_t rsa = ta ? 1 : lda, csa = ta ? lda : 1;
  const std::int64_t rsb = tb ? 1 : ldb, csb = tb ? ldb : 1;
  blis().sgemm(0, 0, m, n, k, &alpha, a, rsa, csa, b, rsb, csb, &beta, c, ldc, 1);
}

}  // namespace backend

namespace {

struct scratch {
  std::vector<std::uint16_t> a16, b16;
  std::vector<float> a32, b32;
};
scratch& tl_scratch() {
  thread_local scratch s;
  return s;
}

__attribute__((target("avx512f,avx512bf16"))) void to_bf16_avx512(const float* src,
                                                                  std::uint16_t* dst,
                                                                  std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    std::memcpy(dst + i, &h, 32);
  }
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

// GCC 12's _mm512_cvtps_ph / _mm512_cvtph_ps read an `undefined` register on purpose.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Every element of the stored rows x cols matrix (row stride ld) rounded to its nearest f16
// value (ties to even), kept as fp32 in dense [rows, cols].
__attribute__((target("avx512f"))) void round_f16_avx512(const float* src, int rows, int cols,
                                                         int ld, float* dst) {
  for (int r = 0; r < rows; ++r) {
    const float* s = src + static_cast<std::size_t>(r) * ld;
    float* d = dst + static_cast<std::size_t>(r) * cols;
    int j = 0;
    for (; j + 16 <= cols; j += 16)
      _mm512_storeu_ps(
          d + j, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(s + j),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    for (; j < cols; ++j) d[j] = f16_to_f32(f32_to_f16(s[j]));
  }
}
#pragma GCC diagnostic pop
void round_f16(const float* src, int rows, int cols, int ld, float* dst) {
  if (__builtin_cpu_supports("avx512f")) return round_f16_avx512(src, rows, cols, ld, dst);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < cols; ++j)
      dst[static_cast<std::size_t>(r) * cols + j] =
          f16_to_f32(f32_to_f16(src[static_cast<std::size_t>(r) * ld + j]));
}

void run_f32(gemm_lib l, bool ta, bool tb, int m, int n, int k, float alpha, const float* a,
             int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  switch (l) {
    case gemm_lib::onednn:
      return backend::onednn_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    case gemm_lib::blis:
      return backend::blis_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    default:
      return backend::openblas_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

}  // namespace

bool gemm_nests(gemm_lib l) noexcept {
  return l == gemm_lib::onednn;
}
bool gemm_nests(precision p) {
  return gemm_nests(process_gemm_lib(p));
}

void to_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
  if (__builtin_cpu_supports("avx512bf16")) return to_bf16_avx512(src, dst, n);
  kernels::f32_to_bf16(src, dst, n);
}

// Normalised arguments (gemm_backends.hpp). The stored a is [m, k] or [k, m]; b [k, n] or [n, k].
// The 16-bit precisions round b once and a in slices of rows of op(a) (c's rows): a large a (the
// LM head's [tokens, vocab] logit gradient: 100 MB in bf16) then needs a slice's scratch, not its
// whole copy, and each slice is still a GEMM of at least 64 full rows.
void gemm_run(gemm_lib l, precision p, bool ta, bool tb, int m, int n, int k, float alpha,
              const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  if (!gemm_lib_available(l, p))
    throw kernel_error(std::string("gemm: library ") + gemm_lib_name(l) + " cannot run " +
                       precision_name(p) + " GEMMs here");
  if (p == precision::f32) return run_f32(l, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  constexpr std::size_t k_slice_elems = std::size_t(4) << 20;
  const int br = tb ? n : k, bc = tb ? k : n;
  const int rows = static_cast<int>(std::max<std::size_t>(64, k_slice_elems / std::size_t(k)));
  const std::size_t bn = static_cast<std::size_t>(br) * bc;
  const std::size_t an = static_cast<std::size_t>(std::min(rows, m)) * k;
  scratch& s = tl_scratch();
  if (p == precision::f16) {
    float* b2 = grown(s.b32, bn);
    float* a2 = grown(s.a32, an);
    round_f16(b, br, bc, ldb, b2);
    for (int i0 = 0; i0 < m; i0 += rows) {
      const int mi = std::min(rows, m - i0);  // op(a) rows [i0, i0 + mi): a's rows, or columns
      const float* ai = ta ? a + i0 : a + static_cast<std::size_t>(i0) * lda;
      round_f16(ai, ta ? k : mi, ta ? mi : k, lda, a2);
      run_f32(l, ta, tb, mi, n, k, alpha, a2, ta ? mi : k, b2, bc, beta,
              c + static_cast<std::size_t>(i0) * ldc, ldc);
    }
    return;
  }
  std::uint16_t* b2 = grown(s.b16, bn);
  std::uint16_t* a2 = grown(s.a16, an);
  backend::onednn_to_bf16(b, br, bc, ldb, b2);
  for (int i0 = 0; i0 < m; i0 += rows) {
    const int mi = std::min(rows, m - i0);
    const float* ai = ta ? a + i0 : a + static_cast<std::size_t>(i0) * lda;
    backend::onednn_to_bf16(ai, ta ? k : mi, ta ? mi : k, lda, a2);
    backend::onednn_bf16(ta, tb, mi, n, k, alpha, a2, ta ? mi : k, b2, bc, beta,
                         c + static_cast<std::size_t>(i0) * ldc, ldc);
  }
}

void gemm_with(gemm_lib l, precision p, bool trans_a, bool trans_b, int m, int n, int k,
               float alpha, const float* a, int lda, const float* b, int ldb, float beta, float* c,
               int ldc) {
  if (m <= 0 || n <= 0 || k <= 0)
    throw kernel_error("gemm_with: m, n and k must be positive (kernels::gemm takes empty ones)");
  if (ldc == 0) ldc = n;
  if (lda == 0) lda = trans_a ? m : k;
  if (ldb == 0) ldb = trans_b ? k : n;
  gemm_run(l, p, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst) {
  if (rows <= 0 || cols <= 0) return;
  backend::onednn_to_bf16(x, rows, cols, ld == 0 ? cols : ld, dst);
}

void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (ldc == 0) ldc = n;
  if (k <= 0) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        float& x = c[static_cast<std::size_t>(i) * ldc + j];
        x = beta == 0.0f ? 0.0f : x * beta;
      }
    return;
  }
  if (lda == 0) lda = trans_a ? m : k;
  if (ldb == 0) ldb = trans_b ? k : n;
  backend::onednn_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace cpu
}  // namespace zf::kernels
