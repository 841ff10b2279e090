// bf16 linear family, CPU (see bf16_linear.hpp). The reference (double sums), the portable direct
// loop (8-lane vector extensions), the AVX-512 BF16 direct kernel (vdpbf16ps over a three-way bf16
// split of the activations) and the prefill through oneDNN's bf16 matmul.
// Nothing here allocates: the dispatch (dispatch.cpp) owns the split buffers.
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "kernels/bf16_linear.hpp"
#include "kernels/convert.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/vec8.hpp"

// GCC 12 reports the intrinsics' deliberately undefined upper halves (_mm256_undefined_*) at their
// inlined uses: false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define ZF_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

namespace zf::kernels {
namespace {

using sz = std::size_t;
bool g_simd_off = false;

bool cpu_has_bf16() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bf16");
  return ok;
}

int padded(int k) {
  return (k + 31) / 32 * 32;
}

// y[i, o] from the dot product d: + bias, then into y or onto it.
inline void put(const qgemm_io& io, int ldy, int i, int o, float d) {
  if (io.bias) d += io.bias[o];
  float& y = io.y[sz(i) * ldy + o];
  y = io.accumulate ? y + d : d;
}

// ---- portable direct loop: weights widened exactly, fp32 products in 8 lanes ----

using vec8::v8f;
float dot_portable(const std::uint16_t* w, const float* x, int k) {
  v8f acc0 = {}, acc1 = {};
  int j = 0;
  for (; j + 16 <= k; j += 16) {
    acc0 += vec8::load8(w + j) * vec8::load8(x + j);
    acc1 += vec8::load8(w + j + 8) * vec8::load8(x + j + 8);
  }
  for (; j + 8 <= k; j += 8) acc0 += vec8::load8(w + j) * vec8::load8(x + j);
  float s = vec8::hsum(acc0 + acc1);
  for (; j < k; ++j) s += bf16_to_f32(w[j]) * x[j];
  return s;
}

void direct_portable(const bf16_matrix& w, const qgemm_io& io, int o0, int o1) {
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  for (int i = 0; i < io.m; ++i)
    for (int o = o0; o < o1; ++o)
      put(io, ldy, i, o, dot_portable(w.data + sz(o) * w.k, io.x + sz(i) * ldx, w.k));
}

// ---- AVX-512 BF16 ----

ZF_BF16 inline __m512 widen16(__m256bh h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
}

// The 16 lanes summed in a fixed order (halves, then quarters, ...).
ZF_BF16 inline float hsum16(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// One row: parts of x (16 floats at a time, tail masked) into xs [parts][kp].
ZF_BF16 void split_row_simd(const float* x, int k, int parts, std::uint16_t* xs) {
  const int kp = padded(k);
  for (int j = 0; j < kp; j += 16) {
    const int left = std::clamp(k - j, 0, 16);
    const __mmask16 m = static_cast<__mmask16>((1u << left) - 1u);
    __m512 r = _mm512_maskz_loadu_ps(m, x + j);
    for (int p = 0; p < parts; ++p) {
      const __m256bh h = _mm512_cvtneps_pbh(r);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xs + sz(p) * kp + j), (__m256i)h);
      r = _mm512_sub_ps(r, widen16(h));  // exact: h is r rounded to 8 significant bits
    }
  }
}

// A tile of R rows x O outputs. xs: row r's parts at xs + r * 3 * kp; w: output o's row at
// w + o * k. Each (row, output) has its own two accumulators (the hi part's products, the mid and
// lo parts'), visited in input order: its bits do not depend on the tile it is computed in.
template <int R, int O>
ZF_BF16 void tile_simd(const std::uint16_t* w, int k, const std::uint16_t* xs, float (&out)[R][O]) {
  const int kp = padded(k);
  const sz row3 = 3 * sz(kp);
  __m512 a0[R][O], a1[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) a0[r][o] = a1[r][o] = _mm512_setzero_ps();
  for (int j = 0; j < kp; j += 32) {
    const int left = std::min(k - j, 32);
    const __mmask32 m = left == 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << left) - 1u);
    __m512bh wv[O];
    for (int o = 0; o < O; ++o) wv[o] = (__m512bh)_mm512_maskz_loadu_epi16(m, w + sz(o) * k + j);
    for (int r = 0; r < R; ++r) {
      const std::uint16_t* xr = xs + r * row3 + j;
      const auto hi = (__m512bh)_mm512_loadu_si512(xr);
      const auto mid = (__m512bh)_mm512_loadu_si512(xr + kp);
      const auto lo = (__m512bh)_mm512_loadu_si512(xr + 2 * sz(kp));
      for (int o = 0; o < O; ++o) {
        a0[r][o] = _mm512_dpbf16_ps(a0[r][o], wv[o], hi);
        a1[r][o] = _mm512_dpbf16_ps(a1[r][o], wv[o], lo);
        a1[r][o] = _mm512_dpbf16_ps(a1[r][o], wv[o], mid);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) out[r][o] = hsum16(_mm512_add_ps(a0[r][o], a1[r][o]));
}

// Rows [i, i + R) over outputs [o0, o1): tiles of O outputs, the rest one at a time.
template <int R, int O>
ZF_BF16 void rows_simd(const bf16_matrix& w, const qgemm_io& io, const std::uint16_t* xs, int i,
                       int o0, int o1) {
  const int ldy = io.ldy ? io.ldy : w.n;
  const sz row3 = 3 * sz(padded(w.k));
  const std::uint16_t* xi = xs + sz(i) * row3;
  int o = o0;
  for (; o + O <= o1; o += O) {
    float d[R][O];
    tile_simd<R, O>(w.data + sz(o) * w.k, w.k, xi, d);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < O; ++c) put(io, ldy, i + r, o + c, d[r][c]);
  }
  for (; o < o1; ++o) {
    float d[R][1];
    tile_simd<R, 1>(w.data + sz(o) * w.k, w.k, xi, d);
    for (int r = 0; r < R; ++r) put(io, ldy, i + r, o, d[r][0]);
  }
}

ZF_BF16 void direct_simd(const bf16_matrix& w, const qgemm_io& io, const std::uint16_t* xs, int o0,
                         int o1) {
  // One row (a decode step): 8 weight rows streamed at once; more rows: pairs of rows share
  // each weight load (4 outputs x 2 rows x 2 accumulators fit the 32 registers).
  if (io.m == 1) return rows_simd<1, 8>(w, io, xs, 0, o0, o1);
  int i = 0;
  for (; i + 2 <= io.m; i += 2) rows_simd<2, 4>(w, io, xs, i, o0, o1);
  if (i < io.m) rows_simd<1, 8>(w, io, xs, i, o0, o1);
}

}  // namespace

bool bf16_simd() noexcept {
  return !g_simd_off && cpu_has_bf16();
}
void set_bf16_simd(bool on) noexcept {
  g_simd_off = !on;
}

namespace cpu {

void bf16_gemm_reference(const bf16_matrix& w, const qgemm_io& io) {
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  for (int i = 0; i < io.m; ++i)
    for (int o = 0; o < w.n; ++o) {
      double s = 0;
      const std::uint16_t* wr = w.data + sz(o) * w.k;
      const float* xr = io.x + sz(i) * ldx;
      for (int j = 0; j < w.k; ++j) s += double(bf16_to_f32(wr[j])) * xr[j];
      put(io, ldy, i, o, static_cast<float>(s));
    }
}

std::size_t bf16_split_elems(int m, int k, int parts) {
  return sz(m) * parts * padded(k);
}

void bf16_split_rows(const float* x, int ldx, int m, int k, int parts, std::uint16_t* xs) {
  const int kp = padded(k), lx = ldx ? ldx : k;
  for (int i = 0; i < m; ++i) {
    const float* xr = x + sz(i) * lx;
    std::uint16_t* out = xs + sz(i) * parts * kp;
    if (bf16_simd()) {
      split_row_simd(xr, k, parts, out);
      continue;
    }
    for (int j = 0; j < kp; ++j) {
      float r = j < k ? xr[j] : 0.0f;
      for (int p = 0; p < parts; ++p) {
        const std::uint16_t h = f32_to_bf16(r);
        out[sz(p) * kp + j] = h;
        r -= bf16_to_f32(h);
      }
    }
  }
}

void bf16_gemm_direct(const bf16_matrix& w, const qgemm_io& io, const std::uint16_t* xs, int o0,
                      int o1) {
  if (o0 >= o1 || io.m < 1) return;
  if (xs && bf16_simd()) return direct_simd(w, io, xs, o0, o1);
  direct_portable(w, io, o0, o1);
}

void bf16_gemm_prefill(const bf16_matrix& w, const qgemm_io& io, const std::uint16_t* xb) {
  const int ldy = io.ldy ? io.ldy : w.n;
  gemm_bf16(false, true, io.m, w.n, w.k, 1.0f, xb, padded(w.k), w.data, w.k,
            io.accumulate ? 1.0f : 0.0f, io.y, ldy);
  if (!io.bias) return;
  for (int i = 0; i < io.m; ++i)
    for (int o = 0; o < w.n; ++o) io.y[sz(i) * ldy + o] += io.bias[o];
}

}  // namespace cpu
}  // namespace zf::kernels
