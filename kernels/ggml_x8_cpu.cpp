// ggml family, CPU: q8_0 / q4_0 weights times activations quantized to 8 bits per 32-element
// block (ggml_quant.hpp, "q8 activations"), as llama.cpp's vec_dot_q4_0_q8_0 / q8_0_q8_0 do:
// each block's integer dot product is exact, and one fp32 multiply-add per block applies the
// two scales. Integer dot products let a core keep up with memory where decoding every weight
// to fp32 could not (q4_0 decode: ~11 GB/s of weights per core before).
//   - AVX-512 VNNI (chosen at run time): two blocks per 64-byte vector; vpdpbusd multiplies
//     unsigned weight bytes by signed activation bytes, four products per 32-bit lane.
//       q4_0: the nibbles (0..15) as the unsigned side; the lanes start from -8 * (the block's
//             activation code sum), so each block's sum is sum (c - 8) * q exactly. Weights
//             come as [lo nibbles b, lo b+1, hi b, hi b+1] (16 bytes each), so the activations
//             are read with their 64-bit words permuted into the same order.
//       q8_0: |w| as the unsigned side and the activations negated where w < 0 (ggml's sign
//             trick; |-128| = 128 is right read unsigned).
//     Each block's lanes (8 of 16) are converted to fp32 (exact: |sum| < 2^24) and multiplied
//     into one accumulator per (row, output) by the block pair's scales d_w * d_x, then the 16
//     lanes reduce in a fixed order: an output's operations depend on neither the tile nor m.
//   - Elsewhere a portable loop: per block the exact integer sum, then acc = fma(d_w * d_x,
//     sum, acc) in block order.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/convert.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/ggml_simd.hpp"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define ZF_X8 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

namespace zf::kernels {
namespace {

using namespace ggml_detail;
using sz = std::size_t;
using u8 = std::uint8_t;

bool cpu_has_vnni() {
  static const bool ok = cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
  return ok;
}

float h2f(const u8* p) {
  return f16_to_f32(load_u16(p));
}

// ---- portable loop ----

template <ggml_format F>
void rows_portable(const ggml_matrix& w, const ggml_x8& x, const qgemm_io& io, int o0, int o1) {
  const int ldy = io.ldy ? io.ldy : w.n, nb = w.k / 32;
  const sz rb = row_bytes(w.fmt, w.k);
  for (int o = o0; o < o1; ++o) {
    const u8* row = static_cast<const u8*>(w.data) + sz(o) * rb;
    for (int i = 0; i < io.m; ++i) {
      const std::int8_t* q = x.q + sz(i) * w.k;
      const float* d = x.d + sz(i) * nb;
      float acc = 0.0f;
      for (int b = 0; b < nb; ++b) {
        int s = 0;
        if constexpr (F == ggml_format::q8_0) {
          const u8* blk = row + sz(b) * 34;
          for (int j = 0; j < 32; ++j) s += int(std::int8_t(blk[2 + j])) * q[32 * b + j];
          acc = std::fma(h2f(blk) * d[b], float(s), acc);
        } else {
          const u8* blk = row + sz(b) * 18;
          for (int j = 0; j < 16; ++j)
            s += (int(blk[2 + j] & 0xF) - 8) * q[32 * b + j] +
                 (int(blk[2 + j] >> 4) - 8) * q[32 * b + j + 16];
          acc = std::fma(h2f(blk) * d[b], float(s), acc);
        }
      }
      put(io, ldy, i, o, acc);
    }
  }
}

// ---- AVX-512 VNNI ----

// One block pair's weights of one output: w as the unsigned bytes vpdpbusd takes (q4_0:
// nibbles; q8_0: |w|, with sign: the lanes whose w < 0) and the scales d_w in their lanes.
// last_odd: only the first block exists (a row with an odd number of blocks): the second half
// and its scale are zero, and nothing past the row is read.
template <ggml_format F>
struct wpair;

// The fp16 scales at p0 and p1 (null: 0) converted by F16C and spread to the lanes lane_of
// names (0: p0's, 1: p1's).
ZF_X8 inline __m512 scales(const u8* p0, const u8* p1, __m512i lane_of) {
  const std::uint32_t h = load_u16(p0) | (p1 ? std::uint32_t(load_u16(p1)) << 16 : 0u);
  const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(h)));
  return _mm512_permutexvar_ps(lane_of, _mm512_castps128_ps512(f));
}

template <>
struct wpair<ggml_format::q4_0> {
  static constexpr int bytes = 18;
  __m512i u;
  __m512 d;
  ZF_X8 void load(const u8* blk, bool last_odd) {
    const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i v1 = last_odd ? _mm_setzero_si128()
                                : _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 20));
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(v0), v1, 1);
    const __m256i m = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_and_si256(t, m), hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m);
    u = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // lo b, lo b+1, hi b, hi b+1
    d = scales(blk, last_odd ? nullptr : blk + 18,
               _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1));
  }
};

template <>
struct wpair<ggml_format::q8_0> {
  static constexpr int bytes = 34;
  __m512i u;
  __mmask64 neg;
  __m512 d;
  ZF_X8 void load(const u8* blk, bool last_odd) {
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i v1 = last_odd ? _mm256_setzero_si256()
                                : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 36));
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(v0), v1, 1);
    u = _mm512_abs_epi8(v);
    neg = _mm512_movepi8_mask(v);
    d = scales(blk, last_odd ? nullptr : blk + 34,
               _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  }
};

// One row's activations for a block pair, in the weights' byte order, with the scales d_x in
// the same lanes and (q4_0) the -8 * code-sum start of each block's lanes.
template <ggml_format F>
struct xpair {
  __m512i q, start;
  __m512 d;
  ZF_X8 void load(const ggml_x8& x, int row, int k, int b, bool last_odd) {
    const int nb = k / 32;
    const std::int8_t* p = x.q + sz(row) * k + sz(b) * 32;
    q = last_odd ? _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))
                 : _mm512_loadu_si512(p);
    const float* xd = x.d + sz(row) * nb + b;
    const float d1 = last_odd ? 0.0f : xd[1];
    if constexpr (F == ggml_format::q4_0) {
      q = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), q);
      d = _mm512_mask_blend_ps(0xF0F0, _mm512_set1_ps(xd[0]), _mm512_set1_ps(d1));
      const std::int32_t* s = x.sum + sz(row) * nb + b;
      start = _mm512_mask_set1_epi32(_mm512_maskz_set1_epi32(0x0001, -8 * s[0]), 0x0010,
                                     last_odd ? 0 : -8 * s[1]);
    } else {
      d = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(xd[0]), _mm512_set1_ps(d1));
      start = _mm512_setzero_si512();
    }
  }
};

template <ggml_format F>
ZF_X8 inline __m512i pair_dot(const wpair<F>& w, const xpair<F>& x) {
  if constexpr (F == ggml_format::q4_0) {
    return _mm512_dpbusd_epi32(x.start, w.u, x.q);
  } else {
    const __m512i s = _mm512_mask_sub_epi8(x.q, w.neg, _mm512_setzero_si512(), x.q);
    return _mm512_dpbusd_epi32(x.start, w.u, s);
  }
}

// R rows (from row r0 of x) times O weight rows (w, row stride rb): out[r][o].
template <ggml_format F, int R, int O>
ZF_X8 void tile(const u8* w, sz rb, int k, const ggml_x8& x, int r0, float (&out)[R][O]) {
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  const int nb = k / 32;
  for (int b = 0; b < nb; b += 2) {
    const bool odd = b + 1 == nb;
    xpair<F> xp[R];
    for (int r = 0; r < R; ++r) xp[r].load(x, r0 + r, k, b, odd);
    for (int o = 0; o < O; ++o) {
      const u8* blk = w + sz(o) * rb + sz(b) * wpair<F>::bytes;
      // One row: the next tile's rows prefetched (decode streams O short rows at once).
      if constexpr (R == 1) _mm_prefetch(reinterpret_cast<const char*>(blk + O * rb), _MM_HINT_T0);
      wpair<F> wp;
      wp.load(blk, odd);
      for (int r = 0; r < R; ++r)
        acc[r][o] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair_dot(wp, xp[r])),
                                    _mm512_mul_ps(wp.d, xp[r].d), acc[r][o]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) out[r][o] = hsum16(acc[r][o]);
}

template <ggml_format F, int R, int O>
ZF_X8 void rows_simd(const ggml_matrix& w, const ggml_x8& x, const qgemm_io& io, int i, int o0,
                     int o1) {
  const int ldy = io.ldy ? io.ldy : w.n;
  const sz rb = row_bytes(w.fmt, w.k);
  const u8* base = static_cast<const u8*>(w.data);
  int o = o0;
  for (; o + O <= o1; o += O) {
    float d[R][O];
    tile<F, R, O>(base + sz(o) * rb, rb, w.k, x, i, d);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < O; ++c) put(io, ldy, i + r, o + c, d[r][c]);
  }
  for (; o < o1; ++o) {
    float d[R][1];
    tile<F, R, 1>(base + sz(o) * rb, rb, w.k, x, i, d);
    for (int r = 0; r < R; ++r) put(io, ldy, i + r, o, d[r][0]);
  }
}

// One row: 8 weight rows streamed at once; more: 4 rows x 2 outputs, 2 x 4, then 1 x 8.
template <ggml_format F>
ZF_X8 void direct_simd(const ggml_matrix& w, const ggml_x8& x, const qgemm_io& io, int o0, int o1) {
  int i = 0;
  for (; i + 4 <= io.m; i += 4) rows_simd<F, 4, 2>(w, x, io, i, o0, o1);
  if (i + 2 <= io.m) {
    rows_simd<F, 2, 4>(w, x, io, i, o0, o1);
    i += 2;
  }
  if (i < io.m) rows_simd<F, 1, 8>(w, x, io, i, o0, o1);
}

bool is_x8_format(ggml_format f) {
  return f == ggml_format::q8_0 || f == ggml_format::q4_0;
}

}  // namespace

void ggml_quantize_x8(const float* x, int k, std::int8_t* q, float* d, std::int32_t* sum) {
  for (int b = 0; b < k / 32; ++b) {
    const float* xb = x + sz(b) * 32;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
    int s = 0;
    for (int j = 0; j < 32; ++j) {
      const int c = static_cast<int>(std::nearbyint(xb[j] * id));
      q[sz(b) * 32 + j] = static_cast<std::int8_t>(c);
      s += c;
    }
    d[b] = db;
    sum[b] = s;
  }
}

void ggml_x8_buffer::quantize(const float* x, int ldx, int m, int k) {
  const int nb = k / 32;
  q.resize(std::max(q.size(), sz(m) * k));
  d.resize(std::max(d.size(), sz(m) * nb));
  sum.resize(std::max(sum.size(), sz(m) * nb));
  for (int i = 0; i < m; ++i)
    ggml_quantize_x8(x + sz(i) * (ldx ? ldx : k), k, q.data() + sz(i) * k, d.data() + sz(i) * nb,
                     sum.data() + sz(i) * nb);
}

bool ggml_x8_simd() noexcept {
  return ggml_simd() && cpu_has_vnni();
}

namespace cpu {

void ggml_x8_reference(const ggml_matrix& w, const qgemm_io& io) {
  if (!is_x8_format(w.fmt)) throw std::invalid_argument("ggml_x8_reference: not q8_0 / q4_0");
  check_ggml_shape(w.fmt, w.k, w.n);
  const int ldy = io.ldy ? io.ldy : w.n, nb = w.k / 32;
  ggml_x8_buffer xb;
  xb.quantize(io.x, io.ldx, io.m, w.k);
  const sz rb = row_bytes(w.fmt, w.k);
  std::vector<float> wrow(sz(w.k));
  for (int o = 0; o < w.n; ++o) {
    const u8* row = static_cast<const u8*>(w.data) + sz(o) * rb;
    ggml_dequantize_row(w.fmt, row, w.k, wrow.data());  // d_w * code, exact
    for (int i = 0; i < io.m; ++i) {
      double s = 0;
      for (int b = 0; b < nb; ++b) {
        double blk = 0;
        for (int j = 32 * b; j < 32 * b + 32; ++j)
          blk += double(wrow[sz(j)]) * xb.q[sz(i) * w.k + j];
        s += blk * xb.d[sz(i) * nb + b];
      }
      put(io, ldy, i, o, static_cast<float>(s));
    }
  }
}

void ggml_x8_direct(const ggml_matrix& w, const ggml_x8& x, const qgemm_io& io, int o0, int o1) {
  o0 = std::max(o0, 0);
  o1 = std::min(o1, w.n);
  if (o0 >= o1 || io.m < 1) return;
  const bool q4 = w.fmt == ggml_format::q4_0;
  if (!ggml_x8_simd()) {
    if (q4) return rows_portable<ggml_format::q4_0>(w, x, io, o0, o1);
    return rows_portable<ggml_format::q8_0>(w, x, io, o0, o1);
  }
  // Passes of ggml_max_rows rows: each row's outputs are computed alike whatever the pass.
  const int nb = w.k / 32, ldy = io.ldy ? io.ldy : w.n;
  for (int i0 = 0; i0 < io.m; i0 += ggml_max_rows) {
    qgemm_io p = io;
    p.y = io.y + sz(i0) * ldy;
    p.ldy = ldy;
    p.m = std::min(ggml_max_rows, io.m - i0);
    const ggml_x8 xp{x.q + sz(i0) * w.k, x.d + sz(i0) * nb, x.sum + sz(i0) * nb};
    if (q4)
      direct_simd<ggml_format::q4_0>(w, xp, p, o0, o1);
    else
      direct_simd<ggml_format::q8_0>(w, xp, p, o0, o1);
  }
}

}  // namespace cpu
}  // namespace zf::kernels
