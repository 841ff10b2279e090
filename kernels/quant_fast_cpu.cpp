// Quant family, fast CPU paths: the direct (decode) GEMM over packed rows, row dequantization
// for the tiled prefill GEMM, each with an AVX-512 body (chosen at run time: the build targets
// x86-64-v3) and a portable one. See quant.hpp for the formats and the decoders' tricks.
//
// Direct kernel: for each output row o and up to R rows of x at once, every group's 32-element
// blocks are decoded once into two vectors (elements 0..15 and 16..31) and multiplied into two
// accumulators per x row (one per half, two chains); at the group's end their sum times the
// group's scale joins the row's total, reduced across lanes at the end. A row's operations do not
// depend on R, on the other rows or on the output range, so the result is batch-invariant.
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/quant.hpp"

#define ZF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

namespace zf::kernels {
namespace {

bool g_simd_off = false;

bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
}

using sz = std::size_t;

// ---- decoders: one 32-element block at p -> a (elements 0..15), b (16..31), unscaled ----
// t0, t1: the format's value tables (see tables_for); the value is code's times 1 / fold.

struct dec_int8 {
  static constexpr int bytes = 32;
  ZF_AVX512 static inline void run(const std::uint8_t* p, __m512, __m512, __m512& a, __m512& b) {
    a = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    b = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  }
};

// int4 and fp4: a nibble pair per byte, values from a 16-entry table (vpermps reads index bits
// 0..3 only, so the low nibble needs no mask).
struct dec_nibble {
  static constexpr int bytes = 16;
  ZF_AVX512 static inline void run(const std::uint8_t* p, __m512 t, __m512, __m512& a, __m512& b) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    a = _mm512_permutexvar_ps(v, t);
    b = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t);
  }
};

// fp6_e3m2: the 4-bit plane plus the u64 of high bit pairs; index = low 4 bits | exponent MSB
// << 4 into the 32 magnitudes (t0: 0..15, t1: 16..31), the sign from the pair's high bit.
struct dec_fp6 {
  static constexpr int bytes = 24;
  ZF_AVX512 static inline __m512 one(__m512i lo, __m512i hi, __m512 t0, __m512 t1) {
    const __m512i idx = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0xf), lo,
                                                  _mm512_slli_epi32(hi, 4), 0xca);  // m ? lo : hi
    const __m512 mag = _mm512_permutex2var_ps(t0, idx, t1);
    const __m512i s = _mm512_ternarylogic_epi32(_mm512_castps_si512(mag), _mm512_slli_epi32(hi, 30),
                                                _mm512_set1_epi32(int(0x80000000u)), 0xf8);
    return _mm512_castsi512_ps(s);  // mag | (hi << 30 & sign)
  }
  ZF_AVX512 static inline void run(const std::uint8_t* p, __m512 t0, __m512 t1, __m512& a,
                                   __m512& b) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    std::uint64_t h;
    std::memcpy(&h, p + 16, 8);
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i ha = _mm512_srlv_epi32(_mm512_set1_epi32(int(std::uint32_t(h))), sh);
    const __m512i hb = _mm512_srlv_epi32(_mm512_set1_epi32(int(std::uint32_t(h >> 32))), sh);
    a = one(v, ha, t0, t1);
    b = one(_mm512_srli_epi32(v, 4), hb, t0, t1);
  }
};

// FP8 through fp16: e5m2 is fp16's top byte; e4m3's magnitude << 7 and sign << 8 is an fp16 of
// 2^-8 times its value (subnormals included), fold 256.
template <bool E4M3>
struct dec_fp8 {
  static constexpr int bytes = 32;
  ZF_AVX512 static inline __m512 half(const std::uint8_t* p) {
    const __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    __m256i h;
    if constexpr (E4M3) {
      h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x7f)), 7),
                          _mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x80)), 8));
    } else {
      h = _mm256_slli_epi16(v, 8);
    }
    return _mm512_cvtph_ps(h);
  }
  ZF_AVX512 static inline void run(const std::uint8_t* p, __m512, __m512, __m512& a, __m512& b) {
    a = half(p);
    b = half(p + 16);
  }
};

struct tables {
  float t0[16] = {}, t1[16] = {};
  float fold = 1;  // the decoders' values are the codes' / fold
};

tables tables_for(qformat f) {
  tables t;
  if (f == qformat::int4)
    for (int c = 0; c < 16; ++c) t.t0[c] = float(c < 8 ? c : c - 16);  // symmetric (asym: 0..15)
  if (f == qformat::fp4_e2m1)
    for (unsigned c = 0; c < 16; ++c) t.t0[c] = fp_decode(f, c);
  if (f == qformat::fp6_e3m2)
    for (unsigned c = 0; c < 16; ++c) {
      t.t0[c] = fp_decode(f, c);
      t.t1[c] = fp_decode(f, c + 16);
    }
  if (f == qformat::fp8_e4m3) t.fold = 256.0f;
  return t;
}

// The group's table: the asymmetric int4 one is c - zero.
ZF_AVX512 inline __m512 group_table(__m512 t0, const std::uint8_t* zeros, int g) {
  return zeros ? _mm512_sub_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                               _mm512_set1_ps(float(zeros[g])))
               : t0;
}

// The epilogue: y = v (+ bias) (+ y).
inline void put(const qgemm_io& io, sz at, int o, float v) {
  v += io.bias ? io.bias[o] : 0.0f;
  io.y[at] = io.accumulate ? io.y[at] + v : v;
}

// Rows [i0, i0 + R) of io.
template <class D, int R>
ZF_AVX512 void direct_rows(const qmatrix& q, const qgemm_io& io, int i0, int o0, int o1,
                           const tables& tb) {
  const int G = q.groups(), nb = q.group / 32;
  const sz rb = packed_row_bytes(q.fmt, q.k), lx = io.ldx ? io.ldx : q.k,
           ly = io.ldy ? io.ldy : q.n;
  const float* x = io.x + sz(i0) * lx;
  const __m512 t0 = _mm512_loadu_ps(tb.t0), t1 = _mm512_loadu_ps(tb.t1);
  for (int o = o0; o < o1; ++o) {
    const std::uint8_t* row = q.data + sz(o) * rb;
    const float* sc = q.scales + sz(o) * G;
    const std::uint8_t* zr = q.zeros ? q.zeros + sz(o) * G : nullptr;
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int g = 0; g < G; ++g) {
      const __m512 tg = group_table(t0, zr, g);
      __m512 ga[R][2];
      for (int r = 0; r < R; ++r) ga[r][0] = ga[r][1] = _mm512_setzero_ps();
      for (int b = 0; b < nb; ++b) {
        const int kk = g * q.group + 32 * b;
        __m512 wa, wb;
        D::run(row + sz(kk / 32) * D::bytes, tg, t1, wa, wb);
        for (int r = 0; r < R; ++r) {
          ga[r][0] = _mm512_fmadd_ps(wa, _mm512_loadu_ps(x + r * lx + kk), ga[r][0]);
          ga[r][1] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(x + r * lx + kk + 16), ga[r][1]);
        }
      }
      const __m512 s = _mm512_set1_ps(sc[g] * tb.fold);
      for (int r = 0; r < R; ++r)
        acc[r] = _mm512_fmadd_ps(_mm512_add_ps(ga[r][0], ga[r][1]), s, acc[r]);
    }
    for (int r = 0; r < R; ++r) put(io, (i0 + r) * ly + o, o, _mm512_reduce_add_ps(acc[r]));
  }
}

template <class D>
ZF_AVX512 void direct_simd(const qmatrix& q, const qgemm_io& io, int o0, int o1) {
  const tables tb = tables_for(q.fmt);
  int i = 0;
  for (; i + 4 <= io.m; i += 4) direct_rows<D, 4>(q, io, i, o0, o1, tb);
  switch (io.m - i) {
    case 3:
      direct_rows<D, 3>(q, io, i, o0, o1, tb);
      break;
    case 2:
      direct_rows<D, 2>(q, io, i, o0, o1, tb);
      break;
    case 1:
      direct_rows<D, 1>(q, io, i, o0, o1, tb);
      break;
    default:
      break;
  }
}

template <class D>
ZF_AVX512 void dequant_simd(const qmatrix& q, int o0, int o1, float* out) {
  const tables tb = tables_for(q.fmt);
  const __m512 t0 = _mm512_loadu_ps(tb.t0), t1 = _mm512_loadu_ps(tb.t1);
  const int G = q.groups(), nb = q.group / 32, k = q.k;
  const sz rb = packed_row_bytes(q.fmt, k);
  for (int o = o0; o < o1; ++o) {
    const std::uint8_t* row = q.data + sz(o) * rb;
    float* w = out + sz(o - o0) * k;
    for (int g = 0; g < G; ++g) {
      const __m512 tg = group_table(t0, q.zeros ? q.zeros + sz(o) * G : nullptr, g);
      const __m512 s = _mm512_set1_ps(q.scales[sz(o) * G + g] * tb.fold);
      for (int b = 0; b < nb; ++b) {
        const int kk = g * q.group + 32 * b;
        __m512 wa, wb;
        D::run(row + sz(kk / 32) * D::bytes, tg, t1, wa, wb);
        _mm512_storeu_ps(w + kk, _mm512_mul_ps(wa, s));
        _mm512_storeu_ps(w + kk + 16, _mm512_mul_ps(wb, s));
      }
    }
  }
}

// The format's decoder as a template argument of fn.
template <template <class> class Fn, class... A>
void with_decoder(qformat f, A&&... a) {
  switch (f) {
    case qformat::int8:
      return Fn<dec_int8>::run(a...);
    case qformat::int4:
    case qformat::fp4_e2m1:
      return Fn<dec_nibble>::run(a...);
    case qformat::fp6_e3m2:
      return Fn<dec_fp6>::run(a...);
    case qformat::fp8_e4m3:
      return Fn<dec_fp8<true>>::run(a...);
    case qformat::fp8_e5m2:
      return Fn<dec_fp8<false>>::run(a...);
  }
}
template <class D>
struct direct_fn {
  static void run(const qmatrix& q, const qgemm_io& io, int o0, int o1) {
    direct_simd<D>(q, io, o0, o1);
  }
};
template <class D>
struct dequant_fn {
  static void run(const qmatrix& q, int o0, int o1, float* out) { dequant_simd<D>(q, o0, o1, out); }
};

// ---- W8A8: int8 x int8 -> int32 with AVX-512 VNNI (vpdpbusd multiplies u8 by s8: |x| against
// w with x's sign, the classic way round) ----
#define ZF_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

bool cpu_has_vnni() {
  static const bool ok = cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
  return ok;
}

ZF_VNNI inline float sum8(__m256 v) {  // a fixed order: the same bits for any batch
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

template <int R>
ZF_VNNI void w8a8_rows(const qmatrix& q, const std::int8_t* xq, const float* xs, const qgemm_io& io,
                       int i0, int o0, int o1) {
  const int G = q.groups(), nb = q.group / 32, k = q.k;
  const sz ly = io.ldy ? io.ldy : q.n;
  const std::int8_t* x = xq + sz(i0) * k;
  for (int o = o0; o < o1; ++o) {
    const auto* w = reinterpret_cast<const std::int8_t*>(q.data) + sz(o) * k;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int g = 0; g < G; ++g) {
      __m256i d[R];
      for (int r = 0; r < R; ++r) d[r] = _mm256_setzero_si256();
      for (int b = 0; b < nb; ++b) {
        const int kk = g * q.group + 32 * b;
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + kk));
        for (int r = 0; r < R; ++r) {
          const __m256i xv =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + sz(r) * k + kk));
          const __m256i ws =
              _mm256_mask_sub_epi8(wv, _mm256_movepi8_mask(xv), _mm256_setzero_si256(), wv);
          d[r] = _mm256_dpbusd_epi32(d[r], _mm256_abs_epi8(xv), ws);
        }
      }
      const __m256 s = _mm256_set1_ps(q.scales[sz(o) * G + g]);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r]), s, acc[r]);
    }
    for (int r = 0; r < R; ++r) put(io, (i0 + r) * ly + o, o, xs[i0 + r] * sum8(acc[r]));
  }
}

ZF_VNNI void w8a8_simd(const qmatrix& q, const std::int8_t* xq, const float* xs, const qgemm_io& io,
                       int o0, int o1) {
  int i = 0;
  for (; i + 4 <= io.m; i += 4) w8a8_rows<4>(q, xq, xs, io, i, o0, o1);
  for (; i < io.m; ++i) w8a8_rows<1>(q, xq, xs, io, i, o0, o1);
}

// Portable: one row's floats (quant_cpu.cpp's codecs), then a dot per x row in index order.
void dequant_portable(const qmatrix& q, int o0, int o1, float* out) {
  thread_local std::vector<std::uint8_t> codes;
  codes.resize(std::max(codes.size(), sz(q.k)));
  const int G = q.groups();
  const sz rb = packed_row_bytes(q.fmt, q.k);
  for (int o = o0; o < o1; ++o) {
    unpack_row(q.fmt, q.data + sz(o) * rb, q.k, codes.data());
    float* w = out + sz(o - o0) * q.k;
    for (int j = 0; j < q.k; ++j) {
      const sz g = sz(o) * G + sz(j / q.group);
      w[j] = dequantize_value(q.fmt, codes[sz(j)], q.scales[g], q.zeros ? q.zeros[g] : 0,
                              q.zeros != nullptr);
    }
  }
}

}  // namespace

bool quant_simd() noexcept {
  return cpu_has_avx512() && !g_simd_off;
}
void set_quant_simd(bool on) noexcept {
  g_simd_off = !on;
}

namespace cpu {

void dequantize_rows(const qmatrix& q, int o0, int o1, float* out) {
  if (quant_simd()) return with_decoder<dequant_fn>(q.fmt, q, o0, o1, out);
  dequant_portable(q, o0, o1, out);
}

void qgemm_direct(const qmatrix& q, const qgemm_io& io, int o0, int o1) {
  if (quant_simd()) return with_decoder<direct_fn>(q.fmt, q, io, o0, o1);
  thread_local std::vector<float> w;
  w.resize(std::max(w.size(), sz(q.k)));
  const sz lx = io.ldx ? io.ldx : q.k, ly = io.ldy ? io.ldy : q.n;
  for (int o = o0; o < o1; ++o) {
    dequant_portable(q, o, o + 1, w.data());
    for (int i = 0; i < io.m; ++i) {
      const float* xi = io.x + i * lx;
      float acc = 0;
      for (int j = 0; j < q.k; ++j) acc = std::fma(xi[j], w[sz(j)], acc);
      put(io, i * ly + o, o, acc);
    }
  }
}

void qgemm_w8a8_direct(const qmatrix& q, const std::int8_t* xq, const float* xs, const qgemm_io& io,
                       int o0, int o1) {
  if (q.fmt != qformat::int8) throw std::invalid_argument("qgemm_w8a8: the weights are not int8");
  if (quant_simd() && cpu_has_vnni()) return w8a8_simd(q, xq, xs, io, o0, o1);
  const int G = q.groups();
  const sz ly = io.ldy ? io.ldy : q.n;
  for (int i = 0; i < io.m; ++i)
    for (int o = o0; o < o1; ++o) {
      const auto* w = reinterpret_cast<const std::int8_t*>(q.data) + sz(o) * q.k;
      const std::int8_t* xi = xq + sz(i) * q.k;
      float acc = 0;
      for (int g = 0; g < G; ++g) {
        std::int32_t d = 0;
        for (int j = g * q.group; j < (g + 1) * q.group; ++j) d += int(xi[j]) * int(w[j]);
        acc = std::fma(float(d), q.scales[sz(o) * G + g], acc);
      }
      put(io, i * ly + o, o, xs[i] * acc);
    }
}

void qgemm(const qmatrix& q, const qgemm_io& io) {
  // a tile of about 4 MiB of floats: big enough for sgemm to run at its speed (1 MiB tiles cost
  // prefill 17-56% against fp32, bench/quant), small enough to stay in this CPU's L2 + L3
  const int tile = std::clamp((1 << 20) / q.k / 16 * 16, 16, 2048);
  const int lx = io.ldx ? io.ldx : q.k, ly = io.ldy ? io.ldy : q.n;
  thread_local std::vector<float> buf;
  buf.resize(std::max(buf.size(), sz(tile) * q.k));
  for (int o0 = 0; o0 < q.n; o0 += tile) {
    const int o1 = std::min(q.n, o0 + tile);
    dequantize_rows(q, o0, o1, buf.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, io.m, o1 - o0, q.k, 1.0f, io.x, lx,
                buf.data(), q.k, io.accumulate ? 1.0f : 0.0f, io.y + o0, ly);
  }
  if (io.bias)
    for (int i = 0; i < io.m; ++i)
      for (int o = 0; o < q.n; ++o) io.y[sz(i) * ly + o] += io.bias[o];
}

}  // namespace cpu
}  // namespace zf::kernels
