// ggml family, CPU: llama.cpp's "K" super-block formats q4_K and q6_K (ggml_quant.hpp), the
// formats most downloaded GGUF files (Q4_K_M and friends) hold. Read in place: the reference
// decoder (ggml's dequantize_row_q4_K / q6_K, the same fp32 operations, so the same values),
// the AVX-512 block decoders the fp32-activation tile engine (ggml_simd.hpp) multiplies, and a
// plain encoder for tests (not ggml's iterative search: a file written with it is valid but
// less accurate than llama.cpp's, so export does not offer these types).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/convert.hpp"
#include "kernels/ggml_simd.hpp"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace zf::kernels::ggml_detail {
namespace {

using u8 = std::uint8_t;

float h2f(const u8* p) {
  return f16_to_f32(load_u16(p));
}

// ggml's get_scale_min_k4: sub-block j's 6-bit scale and min from the 12 packed bytes.
void scale_min_k4(int j, const u8* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// q4_K, 144 bytes per 256 elements: d, dmin (fp16), scales[12] (8 six-bit scales and mins),
// qs[128] (sub-blocks 2p and 2p+1 in the low and high nibbles of qs[32p .. 32p+31]);
// x = d * sc_j * q - dmin * m_j.
void dequantize_q4_K(const u8* s, int k, float* y) {
  for (int b = 0; b < k / 256; ++b, s += 144) {
    const float d = h2f(s), dmin = h2f(s + 2);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      scale_min_k4(j, s + 4, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      const u8* q = s + 16 + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(j % 2 ? q[l] >> 4 : q[l] & 0xF) - m1;
    }
  }
}

// q6_K, 210 bytes per 256 elements: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16]
// (int8, one per 16 elements), d (fp16); x = d * sc * (q - 32). In each half of 128: element
// l + 32 t (t = 0..3) takes ql[l + 32 (t & 1)]'s low (t < 2) or high nibble and qh[l]'s bits
// 2t..2t+1.
void dequantize_q6_K(const u8* s, int k, float* y) {
  for (int b = 0; b < k / 256; ++b, s += 210) {
    const float d = h2f(s + 208);
    const auto* sc = reinterpret_cast<const std::int8_t*>(s + 192);
    for (int h = 0; h < 2; ++h, y += 128) {
      const u8 *ql = s + 64 * h, *qh = s + 128 + 32 * h;
      for (int l = 0; l < 32; ++l)
        for (int t = 0; t < 4; ++t) {
          const int lo = t < 2 ? ql[l + 32 * (t & 1)] & 0xF : ql[l + 32 * (t & 1)] >> 4;
          const int q = (lo | ((qh[l] >> (2 * t)) & 3) << 4) - 32;
          y[l + 32 * t] = d * float(sc[8 * h + 2 * t + l / 16]) * float(q);
        }
    }
  }
}

// Plain encoders (see the top of the file): per sub-block the range [min(0, lo), hi] in 15
// steps (q4_K) or |x| <= 31 steps (q6_K), the sub-block scales quantized against the
// super-block's largest, the codes rounded against the decoded scales.
void quantize_q4_K(const float* x, int k, u8* dst) {
  for (int b = 0; b < k / 256; ++b, x += 256, dst += 144) {
    float scale[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      const float lo = std::min(0.0f, *std::min_element(x + 32 * j, x + 32 * j + 32));
      const float hi = *std::max_element(x + 32 * j, x + 32 * j + 32);
      scale[j] = (hi - lo) / 15.0f;
      mn[j] = -lo;
    }
    const float d = f16_to_f32(f32_to_f16(*std::max_element(scale, scale + 8) / 63.0f));
    const float dm = f16_to_f32(f32_to_f16(*std::max_element(mn, mn + 8) / 63.0f));
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = d > 0 ? std::min(63, int(std::lround(scale[j] / d))) : 0;
      m[j] = dm > 0 ? std::min(63, int(std::lround(mn[j] / dm))) : 0;
    }
    const std::uint16_t hd = f32_to_f16(d), hm = f32_to_f16(dm);
    std::memcpy(dst, &hd, 2);
    std::memcpy(dst + 2, &hm, 2);
    u8* q = dst + 4;
    for (int j = 0; j < 4; ++j) {
      q[j] = u8(sc[j] | (sc[j + 4] >> 4) << 6);
      q[j + 4] = u8(m[j] | (m[j + 4] >> 4) << 6);
      q[j + 8] = u8((sc[j + 4] & 0xF) | (m[j + 4] & 0xF) << 4);
    }
    for (int j = 0; j < 8; ++j) {
      const float d1 = d * float(sc[j]), m1 = dm * float(m[j]);
      u8* qs = dst + 16 + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        const int c = d1 > 0 ? std::clamp(int(std::lround((x[32 * j + l] + m1) / d1)), 0, 15) : 0;
        qs[l] = u8(j % 2 ? (qs[l] & 0x0F) | c << 4 : c);
      }
    }
  }
}

void quantize_q6_K(const float* x, int k, u8* dst) {
  for (int b = 0; b < k / 256; ++b, x += 256, dst += 210) {
    float scale[16];
    for (int s = 0; s < 16; ++s) {
      float amax = 0;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * s + l]));
      scale[s] = amax / 31.0f;
    }
    const float d = f16_to_f32(f32_to_f16(*std::max_element(scale, scale + 16) / 127.0f));
    auto* sc = reinterpret_cast<std::int8_t*>(dst + 192);
    int q[256];
    for (int s = 0; s < 16; ++s) {
      sc[s] = std::int8_t(d > 0 ? std::min(127, int(std::lround(scale[s] / d))) : 0);
      const float ds = d * float(sc[s]);
      for (int l = 0; l < 16; ++l)
        q[16 * s + l] =
            ds > 0 ? std::clamp(int(std::lround(x[16 * s + l] / ds)), -32, 31) + 32 : 32;
    }
    const std::uint16_t hd = f32_to_f16(d);
    std::memcpy(dst + 208, &hd, 2);
    for (int h = 0; h < 2; ++h) {
      u8 *ql = dst + 64 * h, *qh = dst + 128 + 32 * h;
      const int* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = u8((qq[l] & 0xF) | (qq[l + 64] & 0xF) << 4);
        ql[l + 32] = u8((qq[l + 32] & 0xF) | (qq[l + 96] & 0xF) << 4);
        qh[l] = u8(qq[l] >> 4 | (qq[l + 32] >> 4) << 2 | (qq[l + 64] >> 4) << 4 |
                   (qq[l + 96] >> 4) << 6);
      }
    }
  }
}

// ---- AVX-512 block decoders (the engine's D): 32-element block b = sub-block b % 8 of
// super-block b / 8, the same fp32 operations as the reference decoders ----

struct dec_q4_K {
  static sz offset(int b) { return sz(b) * 18; }  // 144 / 8
  ZF_AVX512 static inline void run(const u8* r, int b, __m512& w0, __m512& w1) {
    const u8* s = r + sz(b / 8) * 144;
    const int j = b % 8;
    int sc, m;
    scale_min_k4(j, s + 4, sc, m);
    // d1 * q is exact (11 + 6 + 4 bits), so one fused d1 * q - m1 rounds as ggml's two steps
    const __m512 d1 = _mm512_set1_ps(h2f(s) * float(sc)),
                 m1 = _mm512_set1_ps(h2f(s + 2) * float(m));
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 16 + 32 * (j / 2)));
    if (j % 2) v = _mm256_srli_epi16(v, 4);
    v = _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
    w0 = _mm512_fmsub_ps(d1, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(v))),
                         m1);
    w1 = _mm512_fmsub_ps(
        d1, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(v, 1))), m1);
  }
  ZF_AVX512 static inline void tail(const u8*, int, __mmask16, __mmask16, __m512&, __m512&) {}
};

struct dec_q6_K {
  static sz offset(int b) { return sz(b) * 210 / 8; }
  ZF_AVX512 static inline void run(const u8* r, int b, __m512& w0, __m512& w1) {
    const u8* s = r + sz(b / 8) * 210;
    const int j = b % 8, h = j / 4, t = j % 4;
    const auto* sc = reinterpret_cast<const std::int8_t*>(s + 192) + 8 * h + 2 * t;
    const float d = h2f(s + 208);
    __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 64 * h + 32 * (t & 1)));
    if (t >= 2) lo = _mm256_srli_epi16(lo, 4);
    lo = _mm256_and_si256(lo, _mm256_set1_epi8(0x0F));
    __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 128 + 32 * h));
    hi = _mm256_and_si256(_mm256_srl_epi16(hi, _mm_cvtsi32_si128(2 * t)), _mm256_set1_epi8(3));
    const __m256i q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)),
                                      _mm256_set1_epi8(32));  // -32 .. 31
    // (d * sc) * q as ggml evaluates it: d * sc is exact, the product rounds once
    w0 = _mm512_mul_ps(_mm512_set1_ps(d * float(sc[0])),
                       _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))));
    w1 = _mm512_mul_ps(_mm512_set1_ps(d * float(sc[1])),
                       _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))));
  }
  ZF_AVX512 static inline void tail(const u8*, int, __mmask16, __mmask16, __m512&, __m512&) {}
};

}  // namespace

bool kquant_row(ggml_format f, bool encode, const float* x, const void* src, int k, void* dst,
                float* y) {
  if (f == ggml_format::q4_K) {
    if (encode)
      quantize_q4_K(x, k, static_cast<u8*>(dst));
    else
      dequantize_q4_K(static_cast<const u8*>(src), k, y);
    return true;
  }
  if (f == ggml_format::q6_K) {
    if (encode)
      quantize_q6_K(x, k, static_cast<u8*>(dst));
    else
      dequantize_q6_K(static_cast<const u8*>(src), k, y);
    return true;
  }
  return false;
}

void kquant_direct_simd(const ggml_matrix& w, const qgemm_io& io, int o0, int o1) {
  if (w.fmt == ggml_format::q4_K)
    direct_simd<dec_q4_K>(w, io, o0, o1);
  else
    direct_simd<dec_q6_K>(w, io, o0, o1);
}

}  // namespace zf::kernels::ggml_detail
