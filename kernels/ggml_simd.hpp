#pragma once
// ggml family, CPU internals shared by ggml_quant_cpu.cpp (the float formats), ggml_kquant_cpu.cpp
// (q4_K / q6_K) and ggml_x8_cpu.cpp (q8_0 / q4_0 with q8 activations): the AVX-512 target, the
// CPU check, unaligned 16-bit loads, the output store, the fixed 16-lane reduction, and the
// fp32-activation tile engine over a block decoder. Not a public header (ggml_quant.hpp is).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/ggml_quant.hpp"

#define ZF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

namespace zf::kernels::ggml_detail {

using sz = std::size_t;

inline bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
}

inline std::uint16_t load_u16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// y[i, o] from the dot product d: + bias, then into y or onto it.
inline void put(const qgemm_io& io, int ldy, int i, int o, float d) {
  if (io.bias) d += io.bias[o];
  float& y = io.y[std::size_t(i) * ldy + o];
  y = io.accumulate ? y + d : d;
}

// The 16 lanes summed in a fixed order (halves, then quarters, ...).
ZF_AVX512 inline float hsum16(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// ggml_kquant_cpu.cpp: a q4_K / q6_K row encoded (x -> dst) or decoded (src -> y); false for
// the other formats. And outputs [o0, o1) of io.m <= ggml_max_rows rows on AVX-512.
bool kquant_row(ggml_format f, bool encode, const float* x, const void* src, int k, void* dst,
                float* y);
void kquant_direct_simd(const ggml_matrix& w, const qgemm_io& io, int o0, int o1);

// ---- the fp32-activation engine over a block decoder D (AVX-512) ----
//   D::offset(b): bytes from a row's start to its 32-element block b (a prefetch address);
//   D::run(row, b, w0, w1): block b's 32 values, exact, as two 16-lane vectors;
//   D::tail(row, j, m0, m1, w0, w1): the float formats' last partial block at element j, masked
//   (the block formats have none: k is a whole number of blocks).

// A tile of R rows of x (x, row stride ldx) times O weight rows (w, row stride rb): out[r][o].
// Every (row, output) has two accumulators (elements 0..15 and 16..31 of each block), fed block
// by block in input order, then the masked tail, then summed and reduced: the same operations in
// every tile shape, so an output's bits do not depend on R, O or its neighbours.
template <class D, int R, int O>
ZF_AVX512 void tile(const std::uint8_t* w, sz rb, int k, const float* x, sz ldx,
                    float (&out)[R][O]) {
  __m512 a0[R][O], a1[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) a0[r][o] = a1[r][o] = _mm512_setzero_ps();
  const int nb = k / 32;
  for (int b = 0; b < nb; ++b) {
    for (int o = 0; o < O; ++o) {
      __m512 w0, w1;
      // One row: the next tile's rows prefetched at the same place (a prefetch never faults);
      // decode's 8 interleaved short rows alone left the hardware prefetcher behind (f16 head
      // 8 -> 26 GB/s).
      if constexpr (R == 1) {
        _mm_prefetch(reinterpret_cast<const char*>(w + sz(o + O) * rb + D::offset(b)), _MM_HINT_T0);
      }
      D::run(w + sz(o) * rb, b, w0, w1);
      for (int r = 0; r < R; ++r) {
        const float* xr = x + sz(r) * ldx + sz(b) * 32;
        a0[r][o] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr), a0[r][o]);
        a1[r][o] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + 16), a1[r][o]);
      }
    }
  }
  if (const int left = k - nb * 32; left > 0) {  // float formats only (q formats: k % 32 == 0)
    const __mmask16 m0 = static_cast<__mmask16>((1u << std::min(left, 16)) - 1u);
    const __mmask16 m1 = static_cast<__mmask16>((1u << std::max(left - 16, 0)) - 1u);
    for (int o = 0; o < O; ++o) {
      __m512 w0, w1;
      D::tail(w + sz(o) * rb, nb * 32, m0, m1, w0, w1);
      for (int r = 0; r < R; ++r) {
        const float* xr = x + sz(r) * ldx + sz(nb) * 32;
        a0[r][o] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m0, xr), a0[r][o]);
        a1[r][o] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(m1, xr + 16), a1[r][o]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) out[r][o] = hsum16(_mm512_add_ps(a0[r][o], a1[r][o]));
}

// Rows [i, i + R) over outputs [o0, o1): tiles of O outputs, the rest one at a time.
template <class D, int R, int O>
ZF_AVX512 void rows_simd(const ggml_matrix& w, const qgemm_io& io, int i, int o0, int o1) {
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  const sz rb = row_bytes(w.fmt, w.k);
  const std::uint8_t* base = static_cast<const std::uint8_t*>(w.data);
  const float* xi = io.x + sz(i) * ldx;
  int o = o0;
  for (; o + O <= o1; o += O) {
    float d[R][O];
    tile<D, R, O>(base + sz(o) * rb, rb, w.k, xi, sz(ldx), d);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < O; ++c) put(io, ldy, i + r, o + c, d[r][c]);
  }
  for (; o < o1; ++o) {
    float d[R][1];
    tile<D, R, 1>(base + sz(o) * rb, rb, w.k, xi, sz(ldx), d);
    for (int r = 0; r < R; ++r) put(io, ldy, i + r, o, d[r][0]);
  }
}

// One row (a decode step): 8 weight rows streamed at once; more rows: 4 rows x 2 outputs or
// 2 rows x 4 outputs share each decoded block (16 accumulators either way).
template <class D>
ZF_AVX512 void direct_simd(const ggml_matrix& w, const qgemm_io& io, int o0, int o1) {
  int i = 0;
  for (; i + 4 <= io.m; i += 4) rows_simd<D, 4, 2>(w, io, i, o0, o1);
  if (i + 2 <= io.m) {
    rows_simd<D, 2, 4>(w, io, i, o0, o1);
    i += 2;
  }
  if (i < io.m) rows_simd<D, 1, 8>(w, io, i, o0, o1);
}

}  // namespace zf::kernels::ggml_detail
