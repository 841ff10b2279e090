// ggml family, CPU (see ggml_quant.hpp): the format table, ggml's reference encoders, the
// reference GEMM (double sums), the fast kernel (AVX-512 chosen at run time, a portable loop
// elsewhere) and cpu::ggml_gemm, which splits outputs over threads (the public ggml_gemm is in
// dispatch.cpp, the cuda twin in ggml_quant_cuda.cu).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/ggml_simd.hpp"
#include "kernels/task_pool.hpp"
#include "kernels/threads.hpp"
#include "kernels/vec8.hpp"

// GCC 12 reports the intrinsics' deliberately undefined upper halves (_mm256_undefined_*) at their
// inlined uses: false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace zf::kernels {
namespace {

using namespace ggml_detail;
using sz = std::size_t;
using u8 = std::uint8_t;
bool g_simd_off = false;

constexpr ggml_format_info k_info[] = {
    {"f32", 1, 4, 0},    {"f16", 1, 2, 1},       {"bf16", 1, 2, 30},     {"q8_0", 32, 34, 8},
    {"q4_0", 32, 18, 2}, {"q4_K", 256, 144, 12}, {"q6_K", 256, 210, 14},
};

// ---- encoders (ggml's reference quantizers) ----

void quantize_q8_0(const float* x, int k, u8* dst) {
  for (int b = 0; b < k / ggml_qk; ++b, x += ggml_qk, dst += 34) {
    float amax = 0.0f;
    for (int j = 0; j < ggml_qk; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t h = f32_to_f16(d);
    std::memcpy(dst, &h, 2);
    for (int j = 0; j < ggml_qk; ++j)
      dst[2 + j] = static_cast<u8>(static_cast<std::int8_t>(std::roundf(x[j] * id)));
  }
}

void quantize_q4_0(const float* x, int k, u8* dst) {
  for (int b = 0; b < k / ggml_qk; ++b, x += ggml_qk, dst += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < ggml_qk; ++j)
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t h = f32_to_f16(d);
    std::memcpy(dst, &h, 2);
    for (int j = 0; j < ggml_qk / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
      dst[2 + j] = static_cast<u8>(q0 | q1 << 4);
    }
  }
}

// ---- portable loop: a row dequantized (exact), then 8-lane fp32 products ----

using vec8::v8f;
// Four accumulators over 32 elements at a time, then 8 at a time into the first, then scalars.
float dot_portable(const float* w, const float* x, int k) {
  v8f a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int j = 0;
  for (; j + 32 <= k; j += 32) {
    a0 += vec8::load8(w + j) * vec8::load8(x + j);
    a1 += vec8::load8(w + j + 8) * vec8::load8(x + j + 8);
    a2 += vec8::load8(w + j + 16) * vec8::load8(x + j + 16);
    a3 += vec8::load8(w + j + 24) * vec8::load8(x + j + 24);
  }
  for (; j + 8 <= k; j += 8) a0 += vec8::load8(w + j) * vec8::load8(x + j);
  float s = vec8::hsum((a0 + a1) + (a2 + a3));
  for (; j < k; ++j) s += w[j] * x[j];
  return s;
}

void direct_portable(const ggml_matrix& w, const qgemm_io& io, int o0, int o1) {
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  const sz rb = row_bytes(w.fmt, w.k);
  thread_local std::vector<float> row;
  row.resize(std::max(row.size(), sz(w.k)));
  for (int o = o0; o < o1; ++o) {
    ggml_dequantize_row(w.fmt, static_cast<const u8*>(w.data) + sz(o) * rb, w.k, row.data());
    for (int i = 0; i < io.m; ++i)
      put(io, ldy, i, o, dot_portable(row.data(), io.x + sz(i) * ldx, w.k));
  }
}

// ---- AVX-512: decoders of one 32-element block into two 16-lane vectors (exact values) ----
// run(row, b, w0, w1): block b of a row (elements 32b..32b+15 and 32b+16..32b+31);
// tail(row, j, m0, m1, w0, w1): the float formats' last partial block at element j, masked.

template <ggml_format F>
struct dec;

template <>
struct dec<ggml_format::f32> {
  static sz offset(int b) { return sz(b) * 128; }
  ZF_AVX512 static inline void run(const u8* r, int b, __m512& w0, __m512& w1) {
    const float* p = reinterpret_cast<const float*>(r) + sz(b) * 32;
    w0 = _mm512_loadu_ps(p);
    w1 = _mm512_loadu_ps(p + 16);
  }
  ZF_AVX512 static inline void tail(const u8* r, int j, __mmask16 m0, __mmask16 m1, __m512& w0,
                                    __m512& w1) {
    const float* p = reinterpret_cast<const float*>(r) + j;
    w0 = _mm512_maskz_loadu_ps(m0, p);
    w1 = _mm512_maskz_loadu_ps(m1, p + 16);
  }
};

template <>
struct dec<ggml_format::f16> {
  static sz offset(int b) { return sz(b) * 64; }
  ZF_AVX512 static inline void run(const u8* r, int b, __m512& w0, __m512& w1) {
    const u8* p = r + sz(b) * 64;
    w0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    w1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
  }
  ZF_AVX512 static inline void tail(const u8* r, int j, __mmask16 m0, __mmask16 m1, __m512& w0,
                                    __m512& w1) {
    const u8* p = r + sz(j) * 2;
    w0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, p));
    w1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, p + 32));
  }
};

template <>
struct dec<ggml_format::bf16> {
  static sz offset(int b) { return sz(b) * 64; }
  ZF_AVX512 static inline __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  ZF_AVX512 static inline void run(const u8* r, int b, __m512& w0, __m512& w1) {
    const u8* p = r + sz(b) * 64;
    w0 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    w1 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
  }
  ZF_AVX512 static inline void tail(const u8* r, int j, __mmask16 m0, __mmask16 m1, __m512& w0,
                                    __m512& w1) {
    const u8* p = r + sz(j) * 2;
    w0 = widen(_mm256_maskz_loadu_epi16(m0, p));
    w1 = widen(_mm256_maskz_loadu_epi16(m1, p + 32));
  }
};

// The family's helper threads when no pool is lent: one task_pool per thread count, started on
// first use and kept (asleep) for the life of the process.
task_pool& shared_pool(int threads) {
  static std::mutex mu;
  static std::map<int, task_pool*> pools;
  std::lock_guard lk(mu);
  task_pool*& p = pools[threads];
  if (!p) p = new task_pool(threads);
  return *p;
}

void check_io(const ggml_matrix& w, const qgemm_io& io) {
  check_ggml_shape(w.fmt, w.k, w.n);
  if (io.m < 0) throw std::invalid_argument("ggml_gemm: m < 0");
  if (io.m == 0) return;
  if (!w.data || !io.x || !io.y) throw std::invalid_argument("ggml_gemm: null data, x or y");
  if ((io.ldx && io.ldx < w.k) || (io.ldy && io.ldy < w.n))
    throw std::invalid_argument("ggml_gemm: ldx < k or ldy < n");
}

}  // namespace

// ---- formats ----

const ggml_format_info& ggml_info(ggml_format f) {
  const auto i = static_cast<sz>(f);
  if (i >= std::size(k_info)) throw std::invalid_argument("ggml_info: unknown format");
  return k_info[i];
}

bool parse_ggml_format(std::string_view name, ggml_format& out) {
  for (sz i = 0; i < std::size(k_info); ++i)
    if (name == k_info[i].name) {
      out = static_cast<ggml_format>(i);
      return true;
    }
  return false;
}

int ggml_block_size(ggml_format f) {
  return ggml_info(f).block;
}
std::size_t ggml_block_bytes(ggml_format f) {
  return sz(ggml_info(f).block_bytes);
}

void check_ggml_shape(ggml_format f, int k, int n) {
  const ggml_format_info& in = ggml_info(f);
  if (k < 1 || n < 1)
    throw std::invalid_argument(std::string("ggml ") + in.name + ": k and n must be >= 1 (k " +
                                std::to_string(k) + ", n " + std::to_string(n) + ")");
  if (k % in.block != 0)
    throw std::invalid_argument(std::string("ggml ") + in.name + ": k " + std::to_string(k) +
                                " is not a multiple of the block size " + std::to_string(in.block));
}

std::size_t row_bytes(ggml_format f, int k) {
  check_ggml_shape(f, k, 1);
  return sz(k / ggml_block_size(f)) * ggml_block_bytes(f);
}

void ggml_quantize_row(ggml_format f, const float* x, int k, void* dst) {
  check_ggml_shape(f, k, 1);
  auto* d = static_cast<u8*>(dst);
  switch (f) {
    case ggml_format::f32:
      std::memcpy(d, x, sz(k) * 4);
      return;
    case ggml_format::f16:
      f32_to_f16(x, d, sz(k));
      return;
    case ggml_format::bf16:
      f32_to_bf16(x, d, sz(k));
      return;
    case ggml_format::q8_0:
      quantize_q8_0(x, k, d);
      return;
    case ggml_format::q4_0:
      quantize_q4_0(x, k, d);
      return;
    default:
      kquant_row(f, true, x, nullptr, k, d, nullptr);
  }
}

void ggml_dequantize_row(ggml_format f, const void* src, int k, float* y) {
  check_ggml_shape(f, k, 1);
  const auto* s = static_cast<const u8*>(src);
  switch (f) {
    case ggml_format::f32:
      std::memcpy(y, s, sz(k) * 4);
      return;
    case ggml_format::f16:
      f16_to_f32(s, y, sz(k));
      return;
    case ggml_format::bf16:
      bf16_to_f32(s, y, sz(k));
      return;
    case ggml_format::q8_0:
      for (int b = 0; b < k / ggml_qk; ++b, s += 34, y += ggml_qk) {
        const float d = f16_to_f32(load_u16(s));
        for (int j = 0; j < ggml_qk; ++j) y[j] = d * float(static_cast<std::int8_t>(s[2 + j]));
      }
      return;
    case ggml_format::q4_0:
      for (int b = 0; b < k / ggml_qk; ++b, s += 18, y += ggml_qk) {
        const float d = f16_to_f32(load_u16(s));
        for (int j = 0; j < ggml_qk / 2; ++j) {
          y[j] = d * float((s[2 + j] & 0xF) - 8);
          y[j + 16] = d * float((s[2 + j] >> 4) - 8);
        }
      }
      return;
    default:
      kquant_row(f, false, nullptr, s, k, nullptr, y);
  }
}

void ggml_quantize_rows(ggml_format f, const float* x, int ldx, int n, int k, void* dst) {
  check_ggml_shape(f, k, n);
  const sz rb = row_bytes(f, k), lx = ldx ? sz(ldx) : sz(k);
  for (int o = 0; o < n; ++o)
    ggml_quantize_row(f, x + sz(o) * lx, k, static_cast<u8*>(dst) + sz(o) * rb);
}

bool ggml_simd() noexcept {
  return !g_simd_off && cpu_has_avx512();
}
void set_ggml_simd(bool on) noexcept {
  g_simd_off = !on;
}

namespace cpu {

void ggml_gemm_reference(const ggml_matrix& w, const qgemm_io& io) {
  check_io(w, io);
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  const sz rb = row_bytes(w.fmt, w.k);
  std::vector<float> row(sz(w.k));
  for (int o = 0; o < w.n; ++o) {
    ggml_dequantize_row(w.fmt, static_cast<const u8*>(w.data) + sz(o) * rb, w.k, row.data());
    for (int i = 0; i < io.m; ++i) {
      const float* xr = io.x + sz(i) * ldx;
      double s = 0;
      for (int j = 0; j < w.k; ++j) s += double(row[sz(j)]) * xr[j];
      put(io, ldy, i, o, static_cast<float>(s));
    }
  }
}

void ggml_gemm_direct(const ggml_matrix& w, const qgemm_io& io, int o0, int o1) {
  o0 = std::max(o0, 0);
  o1 = std::min(o1, w.n);
  if (o0 >= o1 || io.m < 1) return;
  if (w.fmt == ggml_format::q8_0 || w.fmt == ggml_format::q4_0) {
    thread_local ggml_x8_buffer xq;
    xq.quantize(io.x, io.ldx, io.m, w.k);
    return ggml_x8_direct(w, xq.view(), io, o0, o1);
  }
  if (!ggml_simd()) return direct_portable(w, io, o0, o1);
  // Passes of ggml_max_rows rows: each row's outputs are computed alike whatever the pass.
  for (int i0 = 0; i0 < io.m; i0 += ggml_max_rows) {
    qgemm_io p = io;
    const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
    p.x = io.x + sz(i0) * ldx;
    p.y = io.y + sz(i0) * ldy;
    p.ldx = ldx;
    p.ldy = ldy;
    p.m = std::min(ggml_max_rows, io.m - i0);
    switch (w.fmt) {
      case ggml_format::f32:
        direct_simd<dec<ggml_format::f32>>(w, p, o0, o1);
        break;
      case ggml_format::f16:
        direct_simd<dec<ggml_format::f16>>(w, p, o0, o1);
        break;
      case ggml_format::bf16:
        direct_simd<dec<ggml_format::bf16>>(w, p, o0, o1);
        break;
      case ggml_format::q4_K:
      case ggml_format::q6_K:
        kquant_direct_simd(w, p, o0, o1);
        break;
      default:  // q8_0 / q4_0 went to ggml_x8_direct above
        break;
    }
  }
}

// The cpu side of ggml_gemm (the public one is in dispatch.cpp): prefill or the direct kernel,
// split over a lent pool's threads.
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io) {
  check_io(w, io);
  if (io.m == 0) return;
  // Prefill outside batch-invariant mode: one GEMM over the decoded matrix, where 16-row passes
  // of the direct kernel would decode the weights m / 16 times.
  if (io.m > ggml_max_rows && !batch_invariant()) return cpu::ggml_gemm_prefill(w, io);
  // q8_0 / q4_0: the activations quantized once here (the caller's buffer: helpers read it).
  const bool x8 = w.fmt == ggml_format::q8_0 || w.fmt == ggml_format::q4_0;
  thread_local ggml_x8_buffer xq;
  if (x8) xq.quantize(io.x, io.ldx, io.m, w.k);
  const ggml_x8 xv = xq.view();
  auto fn = [&](int o0, int o1) {
    if (x8)
      cpu::ggml_x8_direct(w, xv, io, o0, o1);
    else
      cpu::ggml_gemm_direct(w, io, o0, o1);
  };
  if (double(io.m) * w.n * w.k < ggml_parallel_min || w.n < 32) return fn(0, w.n);
  // Pieces of whole 16-output groups; a lent pool gets a few per thread to even out progress.
  if (const kernel_pool* p = lent_pool(); p && p->threads >= 2) {
    const int piece = std::max(16, (w.n / (4 * p->threads) + 15) / 16 * 16);
    p->run((w.n + piece - 1) / piece,
           [&](int i) { fn(i * piece, std::min(w.n, (i + 1) * piece)); });
    return;
  }
  const int t = num_threads();
  if (t < 2) return fn(0, w.n);
  const int piece = std::max(16, (w.n / (8 * t) + 15) / 16 * 16);
  const task_pool::task one = [&](int, int i) { fn(i * piece, std::min(w.n, (i + 1) * piece)); };
  if (!shared_pool(t).try_run((w.n + piece - 1) / piece, one)) fn(0, w.n);
}

}  // namespace cpu
}  // namespace zf::kernels
