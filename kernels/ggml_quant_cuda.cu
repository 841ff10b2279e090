// ggml family, CUDA twin of the decode GEMM (ggml_quant.hpp's contract, pointers in GPU memory):
// y [m, n] (row stride ldy) = x [m, k] (fp32, row stride ldx) @ W^T (+ bias [n]) (+ y), the
// weights read in place in their ggml format (f32, f16, bf16, q8_0, q4_0, q4_K, q6_K).
// A GEMV kernel for decode: one warp per output (weight row), four warps per block; the warp
// streams its row once per pass of up to ggml_max_rows (16) activation rows and multiplies every
// decoded weight into all the pass's rows. Larger m: passes of 16 rows, each re-reading the
// weights (this is not a prefill GEMM).
// - Lane l of the warp takes chunks of 8 consecutive elements, c = l, l + 32, ...: for the
//   32-element block formats chunk c is quarter c % 4 of block c / 4, for the K formats lane l
//   covers elements 8l..8l+7 of super-block c / 32. Chunks load 16 bytes at once where the row
//   is 16-byte aligned (f32 / f16 / bf16 rows), 2-byte halves or single bytes otherwise (q8_0 /
//   q4_0 blocks of 34 / 18 bytes are at most 2-byte aligned).
// - Numerics: every weight is decoded as ggml_dequantize_row decodes it (the same fp32
//   operations; f16 by bit operations, exact; q4_K's d1 * q - m1 with the product rounded
//   first, never contracted into an FMA), activations stay fp32 (NOT quantized to q8 as the cpu
//   q8_0 / q4_0 kernel does: compare with cpu::ggml_gemm_reference), products accumulated in fp32
//   per lane in input order, then the 32 lanes reduced by a fixed xor butterfly: the same input
//   gives the same bits every run, and an output's bits do not depend on m or on its place in
//   the batch. Each lane adds at most ceil(k / 256) * 8 products, then 5 butterfly adds.
// - Queued on current_stream(); no allocation, no synchronisation.
#include <stdexcept>
#include <string>

#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/ggml_quant.hpp"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;

constexpr int kWarps = 4;  // outputs per block of 128 threads

// f16 bits -> fp32, exact (the algorithm of kernels/convert.hpp, by bit operations only).
ZF_HD float f16_bits_to_f32(u16 h) {
  const u32 sign = static_cast<u32>(h & 0x8000u) << 16;
  const u32 exp = (h >> 10) & 0x1fu;
  const u32 mant = h & 0x3ffu;
  u32 bits;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32.
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;  // 2^-24
    memcpy(&bits, &mag, sizeof bits);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

// A product rounded on its own (no FMA contraction with a following add), as the cpu decoder.
ZF_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

ZF_HD u16 ld16(const u8* p) {
  return static_cast<u16>(p[0] | (p[1] << 8));
}

// An aligned load of T (16 or 2 bytes) from p: the read-only path on a GPU, memcpy on the host.
template <class T>
ZF_HD void load_aligned(const u8* p, u8* out) {
#if defined(__CUDA_ARCH__)
  const T v = __ldg(reinterpret_cast<const T*>(p));
  memcpy(out, &v, sizeof v);
#else
  memcpy(out, p, sizeof(T));
#endif
}

// N (8, 16 or 32) bytes from p into out: 16-byte loads where p is 16-byte aligned, 2-byte loads
// where it is even, bytes otherwise. The branch depends on p's address only, so the simulation
// takes the same branches (tests place the weights at byte offsets 0, 1 and 2).
template <int N>
ZF_HD void load_bytes(const u8* __restrict__ p, u8 (&out)[N]) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if constexpr (N % 16 == 0) {
    if ((a & 15u) == 0) {
#if defined(__CUDA_ARCH__)
      for (int i = 0; i < N / 16; ++i) load_aligned<uint4>(p + 16 * i, out + 16 * i);
#else
      for (int i = 0; i < N / 16; ++i) memcpy(out + 16 * i, p + 16 * i, 16);
#endif
      return;
    }
  }
  if ((a & 1u) == 0) {
    for (int i = 0; i < N / 2; ++i) load_aligned<unsigned short>(p + 2 * i, out + 2 * i);
    return;
  }
  for (int i = 0; i < N; ++i) out[i] = p[i];
}

// 8 activations from p: two 16-byte loads where p is 16-byte aligned (x rows with ldx % 4 == 0),
// else one float at a time.
ZF_HD void load_x8(const float* __restrict__ p, float (&v)[8]) {
  if ((reinterpret_cast<std::uintptr_t>(p) & 15u) == 0) {
#if defined(__CUDA_ARCH__)
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
#else
    memcpy(v, p, sizeof v);
#endif
    return;
  }
  for (int i = 0; i < 8; ++i) v[i] = p[i];
}

// Decoders: chunk c of a row (8 consecutive elements) -> w[8], exactly ggml_dequantize_row's
// values.
template <ggml_format F>
struct chunk;

template <>
struct chunk<ggml_format::f32> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    u8 b[32];
    load_bytes<32>(row + 32 * static_cast<std::size_t>(c), b);
    memcpy(w, b, 32);
  }
};

template <>
struct chunk<ggml_format::f16> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    u8 b[16];
    load_bytes<16>(row + 16 * static_cast<std::size_t>(c), b);
    for (int i = 0; i < 8; ++i)
      w[i] = f16_bits_to_f32(static_cast<u16>(b[2 * i] | (b[2 * i + 1] << 8)));
  }
};

template <>
struct chunk<ggml_format::bf16> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    u8 b[16];
    load_bytes<16>(row + 16 * static_cast<std::size_t>(c), b);
    for (int i = 0; i < 8; ++i)
      w[i] = bf16_to_f32(static_cast<u16>(b[2 * i] | (b[2 * i + 1] << 8)));
  }
};

// q8_0: block c / 4 (34 bytes: fp16 d, int8 qs[32]); quarter c % 4 is qs[8q .. 8q + 7].
template <>
struct chunk<ggml_format::q8_0> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    const u8* blk = row + 34 * static_cast<std::size_t>(c / 4);
    const float d = f16_bits_to_f32(ld16(blk));
    u8 b[8];
    load_bytes<8>(blk + 2 + 8 * (c % 4), b);
    for (int i = 0; i < 8; ++i) w[i] = d * static_cast<float>(static_cast<signed char>(b[i]));
  }
};

// q4_0: block c / 4 (18 bytes: fp16 d, qs[16]); element j < 16 is qs[j]'s low nibble, j + 16
// its high one, so quarter q reads qs[8 (q % 2) ..] and takes the low (q < 2) or high nibbles.
template <>
struct chunk<ggml_format::q4_0> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    const u8* blk = row + 18 * static_cast<std::size_t>(c / 4);
    const float d = f16_bits_to_f32(ld16(blk));
    const int q = c % 4;
    u8 b[8];
    load_bytes<8>(blk + 2 + 8 * (q % 2), b);
    const int shift = q < 2 ? 0 : 4;
    for (int i = 0; i < 8; ++i) w[i] = d * static_cast<float>(((b[i] >> shift) & 0xF) - 8);
  }
};

// q4_K: super-block c / 32 (144 bytes: fp16 d, fp16 dmin, scales[12], qs[128]); lane part
// p = c % 32 covers elements 8p..8p+7 of sub-block j = p / 4: qs[32 (j / 2) + 8 (p % 4) ..]'s
// low (j even) or high nibbles; x = (d * sc_j) * q - dmin * m_j (ggml's get_scale_min_k4).
template <>
struct chunk<ggml_format::q4_K> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    const u8* blk = row + 144 * static_cast<std::size_t>(c / 32);
    const int p = c % 32, j = p / 4;
    const float d = f16_bits_to_f32(ld16(blk)), dmin = f16_bits_to_f32(ld16(blk + 2));
    const u8* s = blk + 4;
    int sc, m;
    if (j < 4) {
      sc = s[j] & 63;
      m = s[j + 4] & 63;
    } else {
      sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
      m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    u8 b[8];
    load_bytes<8>(blk + 16 + 32 * (j / 2) + 8 * (p % 4), b);
    const int shift = j % 2 ? 4 : 0;
    for (int i = 0; i < 8; ++i) w[i] = mul_rn(d1, static_cast<float>((b[i] >> shift) & 0xF)) - m1;
  }
};

// q6_K: super-block c / 32 (210 bytes: ql[128], qh[64], int8 scales[16], fp16 d); element
// e = 8p + i (p = c % 32) is, in half h = e / 128 with e' = e % 128, t = e' / 32, l = e' % 32:
// ql[64h + l + 32 (t & 1)]'s low (t < 2) or high nibble | qh[32h + l]'s bits 2t..2t+1 << 4,
// minus 32, times d * scales[8h + 2t + l / 16].
template <>
struct chunk<ggml_format::q6_K> {
  ZF_HD static void run(const u8* row, int c, float (&w)[8]) {
    const u8* blk = row + 210 * static_cast<std::size_t>(c / 32);
    const int e = 8 * (c % 32), h = e / 128, t = (e % 128) / 32, l = e % 32;
    const float d = f16_bits_to_f32(ld16(blk + 208));
    const float ds =
        d * static_cast<float>(static_cast<signed char>(blk[192 + 8 * h + 2 * t + l / 16]));
    u8 lo[8], hi[8];
    load_bytes<8>(blk + 64 * h + l + 32 * (t & 1), lo);
    load_bytes<8>(blk + 128 + 32 * h + l, hi);
    const int shift = t < 2 ? 0 : 4;
    for (int i = 0; i < 8; ++i) {
      const int q = (((lo[i] >> shift) & 0xF) | (((hi[i] >> (2 * t)) & 3) << 4)) - 32;
      w[i] = ds * static_cast<float>(q);
    }
  }
};

// The float formats' last chunk when k % 8 != 0: element by element, nothing past k read.
template <ggml_format F>
ZF_HD float element(const u8* row, int e) {
  if constexpr (F == ggml_format::f32) {
    float f;
    memcpy(&f, row + 4 * static_cast<std::size_t>(e), 4);
    return f;
  } else if constexpr (F == ggml_format::f16) {
    return f16_bits_to_f32(ld16(row + 2 * static_cast<std::size_t>(e)));
  } else {
    return bf16_to_f32(ld16(row + 2 * static_cast<std::size_t>(e)));
  }
}

// One warp per output o; R rows of x (m <= R, the pass's rows). Block: kWarps warps.
template <ggml_format F, int R>
__global__ void __launch_bounds__(32 * kWarps)
    ggml_gemv_kernel(const u8* __restrict__ w, std::size_t rb, int n, int k,
                     const float* __restrict__ x, int ldx, int m, const float* __restrict__ bias,
                     float* __restrict__ y, int ldy, bool accumulate) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int o = static_cast<int>(blockIdx.x) * kWarps + static_cast<int>(threadIdx.x >> 5);
  if (o >= n) return;  // the whole warp leaves together: no shuffle misses a lane
  const u8* row = w + static_cast<std::size_t>(o) * rb;
  float acc[R];
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  const int full = k / 8;  // whole chunks (all of them for the block formats)
  for (int c = lane; c < full; c += 32) {
    float wv[8];
    chunk<F>::run(row, c, wv);
    const float* xc = x + 8 * static_cast<std::size_t>(c);
    for (int r = 0; r < R; ++r) {
      if (r < m) {
        float xv[8];
        load_x8(xc + static_cast<std::size_t>(r) * ldx, xv);
        float a = acc[r];
        for (int i = 0; i < 8; ++i) a += wv[i] * xv[i];
        acc[r] = a;
      }
    }
  }
  if constexpr (F == ggml_format::f32 || F == ggml_format::f16 || F == ggml_format::bf16) {
    // The tail (k % 8 elements): the lane that would take chunk `full` takes it.
    if (full * 8 < k && lane == full % 32) {
      for (int e = full * 8; e < k; ++e) {
        const float wv = element<F>(row, e);
        for (int r = 0; r < R; ++r)
          if (r < m) acc[r] += wv * x[static_cast<std::size_t>(r) * ldx + e];
      }
    }
  }
  // Fixed xor butterfly: every lane ends with the same sum, bit for bit.
  for (int r = 0; r < R; ++r) {
    float s = acc[r];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    acc[r] = s;
  }
  // Lane r writes row r's output (+ bias, then onto y), as the cpu kernel's put().
  for (int r = 0; r < R; ++r) {
    if (r == lane && r < m) {
      float d = acc[r];
      if (bias) d += bias[o];
      float& out = y[static_cast<std::size_t>(r) * ldy + o];
      out = accumulate ? out + d : d;
    }
  }
}

struct pass_args {
  const u8* w;
  std::size_t rb;
  int n, k;
  const float* x;
  int ldx, m;
  const float* bias;
  float* y;
  int ldy;
  bool accumulate;
};

template <ggml_format F, int R>
void launch_pass(const pass_args& a) {
  const unsigned blocks = static_cast<unsigned>((a.n + kWarps - 1) / kWarps);
// A comma inside a macro argument (the template's two arguments).
#define ZF_GGML_COMMA ,
  ZF_LAUNCH(ggml_gemv_kernel<F ZF_GGML_COMMA R>, blocks, 32 * kWarps, 0)
  (a.w, a.rb, a.n, a.k, a.x, a.ldx, a.m, a.bias, a.y, a.ldy, a.accumulate);
#undef ZF_GGML_COMMA
}

// The smallest instantiated R >= a.m (1, 2, 4, 8, 16): registers for the rows the pass has.
template <ggml_format F>
void launch_rows(const pass_args& a) {
  if (a.m <= 1) return launch_pass<F, 1>(a);
  if (a.m <= 2) return launch_pass<F, 2>(a);
  if (a.m <= 4) return launch_pass<F, 4>(a);
  if (a.m <= 8) return launch_pass<F, 8>(a);
  launch_pass<F, 16>(a);
}

// Elements and bytes per block (ggml_quant_cpu.cpp's table; kept here so that this library
// needs nothing from zf_kernels).
void block_of(ggml_format f, int& elems, int& bytes) {
  switch (f) {
    case ggml_format::f32:
      elems = 1;
      bytes = 4;
      return;
    case ggml_format::f16:
    case ggml_format::bf16:
      elems = 1;
      bytes = 2;
      return;
    case ggml_format::q8_0:
      elems = 32;
      bytes = 34;
      return;
    case ggml_format::q4_0:
      elems = 32;
      bytes = 18;
      return;
    case ggml_format::q4_K:
      elems = 256;
      bytes = 144;
      return;
    case ggml_format::q6_K:
      elems = 256;
      bytes = 210;
      return;
  }
  throw std::invalid_argument("ggml_gemm: unknown format");
}

}  // namespace

// w.data [n, row bytes], io.x [m, k] (ldx), io.bias [n] or null, io.y [m, n] (ldy): GPU memory.
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io) {
  int elems = 1, bytes = 4;
  block_of(w.fmt, elems, bytes);
  if (w.k < 1 || w.n < 1 || w.k % elems != 0)
    throw std::invalid_argument("ggml_gemm: bad shape (k " + std::to_string(w.k) + ", n " +
                                std::to_string(w.n) + ")");
  if (io.m < 0) throw std::invalid_argument("ggml_gemm: m < 0");
  if (io.m == 0) return;
  if (!w.data || !io.x || !io.y) throw std::invalid_argument("ggml_gemm: null data, x or y");
  if ((io.ldx && io.ldx < w.k) || (io.ldy && io.ldy < w.n))
    throw std::invalid_argument("ggml_gemm: ldx < k or ldy < n");
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  pass_args a{static_cast<const u8*>(w.data),
              static_cast<std::size_t>(w.k / elems) * bytes,
              w.n,
              w.k,
              nullptr,
              ldx,
              0,
              io.bias,
              nullptr,
              ldy,
              io.accumulate};
  for (int i0 = 0; i0 < io.m; i0 += ggml_max_rows) {
    a.x = io.x + static_cast<std::size_t>(i0) * ldx;
    a.y = io.y + static_cast<std::size_t>(i0) * ldy;
    a.m = io.m - i0 < ggml_max_rows ? io.m - i0 : ggml_max_rows;
    switch (w.fmt) {
      case ggml_format::f32:
        launch_rows<ggml_format::f32>(a);
        break;
      case ggml_format::f16:
        launch_rows<ggml_format::f16>(a);
        break;
      case ggml_format::bf16:
        launch_rows<ggml_format::bf16>(a);
        break;
      case ggml_format::q8_0:
        launch_rows<ggml_format::q8_0>(a);
        break;
      case ggml_format::q4_0:
        launch_rows<ggml_format::q4_0>(a);
        break;
      case ggml_format::q4_K:
        launch_rows<ggml_format::q4_K>(a);
        break;
      case ggml_format::q6_K:
        launch_rows<ggml_format::q6_K>(a);
        break;
    }
    check_launch("ggml_gemm launch");
  }
}

}  // namespace zf::kernels::ZF_CUDA_NS
