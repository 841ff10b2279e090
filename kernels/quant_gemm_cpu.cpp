// Quant family, the W8A8 prefill GEMM: int8 activations x int8 weights -> int32 on AVX-512 VNNI
// (vpdpbusd), or on AMX-INT8 tiles where the CPU has them and Linux grants them (below), the
// scales applied in float after each group (quant.hpp: cpu::qgemm_w8a8_gemm).
//
// vpdpbusd multiplies unsigned by signed bytes, four pairs per 32-bit lane. The activations go
// unsigned with a +128 offset (quantize_activations_u8: code + 128, 1..255), the weights stay
// signed, and each group's int32 accumulator starts at -128 * (the group's sum of weight codes),
// so that after the group it holds sum x * w exactly (int32 wraps in between; the final
// |sum| <= 127 * 127 * group < 2^31 for groups up to 65536, which the kernel requires).
//
// Blocking: outputs go in panels of 48 (three vectors of 16 outputs, one output per lane). A
// panel's rows are packed once per call, a 16 x 16 transpose of 4-byte quads at a time, into
// [k / 4][3][16 outputs][4 bytes]: one 64-byte load gives a quad of k for 16 outputs. Every
// 8 token rows then sweep the panel: per quad of k, 3 weight loads, 8 broadcasts of 4 activation
// bytes and 24 vpdpbusd into 24 int32 accumulators held in registers. At a group's end each
// accumulator is converted to float and multiplied by its 16 outputs' scales into a float tile
// (L1), which the epilogue multiplies by the token's scale and adds bias and y to. The panel
// (48 k bytes: 36 KiB at k = 768, 144 KiB at 3072) stays in L1 or L2 while every token row
// passes; the packed panel, its compensations and scales live in per-thread buffers reused
// across calls.
//
// Numbers: the int32 group sums are exact; acc = sum_g s[o, g] * float(sum_g) in g order (the
// first a product, then fused multiply-adds), y = xs[i] * acc + bias (+ y) each rounded, the
// operations the reference cpu::qgemm_w8a8 compiles to here: bit-identical to it in the tests
// (tests/kernels/test_quant.cpp; their bound, for a compiler that contracts it differently:
// 1e-5 of xs * sum_g |s * sum_g| + |bias| + |y|).
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/quant.hpp"

// GCC 12's AVX-512 headers build their undefined operands as `__m512 __Y = __Y;`, which
// -Wmaybe-uninitialized reports at inlined uses here (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define ZF_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

namespace zf::kernels {
namespace {

using sz = std::size_t;

bool cpu_has_vnni() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
}

constexpr int k_rows = 8;    // token rows per tile
constexpr int k_vecs = 3;    // 16-output vectors per panel
constexpr int k_panel = 48;  // outputs per panel

struct alignas(64) blk {
  std::uint8_t b[64];
};

// One panel's packed operands (per thread, reused across calls).
struct panel_buf {
  std::vector<blk> w;      // [k / 4][nv] vectors of 16 outputs x 4 codes
  std::vector<blk> ncomp;  // [G][nv] int32 x 16: -128 * the group's code sum
  std::vector<blk> sc;     // [G][nv] float x 16: the group's scales (0 past the outputs)
  std::vector<blk> tile;   // [k_rows][nv] float x 16: the float accumulators
  std::vector<blk> itile;  // [k_rows][nv] int32 x 16: a group's sums on their way to tile
};

ZF_VNNI inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + s]: rows 4i..4i+3 of column 4L + s in 128-bit lane L
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int s = 0; s < 4; ++s) {
    const __m512i a01 = _mm512_shuffle_i32x4(u[s], u[4 + s], 0x44);
    const __m512i a23 = _mm512_shuffle_i32x4(u[s], u[4 + s], 0xee);
    const __m512i b01 = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], 0x44);
    const __m512i b23 = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], 0xee);
    r[s] = _mm512_shuffle_i32x4(a01, b01, 0x88);
    r[4 + s] = _mm512_shuffle_i32x4(a01, b01, 0xdd);
    r[8 + s] = _mm512_shuffle_i32x4(a23, b23, 0x88);
    r[12 + s] = _mm512_shuffle_i32x4(a23, b23, 0xdd);
  }
}

// Outputs [ob, ob + nout) of q (nout <= 48) into p: nv = ceil(nout / 16) vectors, rows past
// nout as zero codes with scale 0.
ZF_VNNI void pack_panel(const qmatrix& q, int ob, int nout, int nv, panel_buf& p) {
  const int k = q.k, G = q.groups(), nq = k / 4;
  const auto* w = reinterpret_cast<const std::int8_t*>(q.data);
  p.w.resize(std::max(p.w.size(), sz(nq) * k_vecs));
  p.ncomp.resize(std::max(p.ncomp.size(), sz(G) * k_vecs));
  p.sc.resize(std::max(p.sc.size(), sz(G) * k_vecs));
  p.tile.resize(std::max(p.tile.size(), sz(k_rows) * k_vecs));
  p.itile.resize(std::max(p.itile.size(), sz(k_rows) * k_vecs));
  auto* pw = reinterpret_cast<__m512i*>(p.w.data());
  auto* nc = reinterpret_cast<__m512i*>(p.ncomp.data());
  auto* sc = reinterpret_cast<float*>(p.sc.data());
  const int qg = q.group / 4;
  const __m512i ones = _mm512_set1_epi8(1);
  for (int v = 0; v < nv; ++v) {
    const int o0 = ob + 16 * v, rows = std::min(16, nout - 16 * v);
    __m512i sum = _mm512_setzero_si512();  // the group's code sums so far, one output per lane
    for (int qb = 0; qb < nq; qb += 16) {
      const __mmask16 lm = nq - qb >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nq - qb)) - 1);
      __m512i r[16];
      for (int l = 0; l < 16; ++l)
        r[l] = l < rows ? _mm512_maskz_loadu_epi32(lm, w + sz(o0 + l) * k + 4 * sz(qb))
                        : _mm512_setzero_si512();
      transpose16(r);
      for (int j = 0; j < 16 && qb + j < nq; ++j) {
        _mm512_store_si512(pw + sz(qb + j) * nv + v, r[j]);
        sum = _mm512_dpbusd_epi32(sum, ones, r[j]);
        if ((qb + j + 1) % qg == 0) {
          _mm512_store_si512(nc + sz((qb + j) / qg) * nv + v,
                             _mm512_mullo_epi32(sum, _mm512_set1_epi32(-128)));
          sum = _mm512_setzero_si512();
        }
      }
    }
    for (int g = 0; g < G; ++g)
      for (int l = 0; l < 16; ++l)
        sc[(sz(g) * nv + v) * 16 + l] = l < rows ? q.scales[sz(o0 + l) * G + g] : 0.0f;
  }
}

// Token rows [i0, i0 + R) against the packed panel (V vectors): the float accumulators into
// p.tile [R][V][16]. The int32 accumulators leave the registers through p.itile: with the
// conversion and scaling reading them in place, GCC 12 spills all 24 on every step of the
// inner loop; through memory behind a barrier, the loop keeps them in registers.
template <int R, int V>
ZF_VNNI void tile_rows(const qmatrix& q, const std::uint8_t* xu, int i0, panel_buf& p) {
  const int G = q.groups(), qg = q.group / 4, k = q.k;
  const auto* pw = reinterpret_cast<const __m512i*>(p.w.data());
  const auto* nc = reinterpret_cast<const __m512i*>(p.ncomp.data());
  const auto* sc = reinterpret_cast<const float*>(p.sc.data());
  auto* ft = reinterpret_cast<float*>(p.tile.data());
  auto* it = reinterpret_cast<__m512i*>(p.itile.data());
  const std::uint8_t* x = xu + sz(i0) * k;
  for (int g = 0; g < G; ++g) {
    __m512i acc[R][V];
    for (int v = 0; v < V; ++v)
      for (int r = 0; r < R; ++r) acc[r][v] = _mm512_load_si512(nc + sz(g) * V + v);
    const __m512i* w = pw + sz(g) * qg * V;
    const std::uint8_t* xg = x + sz(g) * q.group;
    for (int j = 0; j < qg; ++j) {
      __m512i wv[V];
      for (int v = 0; v < V; ++v) wv[v] = _mm512_load_si512(w + sz(j) * V + v);
      for (int r = 0; r < R; ++r) {
        std::int32_t a;
        std::memcpy(&a, xg + sz(r) * k + 4 * sz(j), 4);
        const __m512i b = _mm512_set1_epi32(a);
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], b, wv[v]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) _mm512_store_si512(it + r * V + v, acc[r][v]);
    asm volatile("" ::: "memory");
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        const __m512 s = _mm512_load_ps(sc + (sz(g) * V + v) * 16);
        float* f = ft + (sz(r) * V + v) * 16;
        const __m512 d = _mm512_cvtepi32_ps(_mm512_load_si512(it + r * V + v));
        _mm512_store_ps(f, g ? _mm512_fmadd_ps(d, s, _mm512_load_ps(f)) : _mm512_mul_ps(d, s));
      }
  }
}

constexpr int k_rne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// y rows [i0, i0 + R), outputs [ob, ob + nout) = xs[i] * tile (+ bias) (+ y), as the
// reference's epilogue: a product, then sums, each rounded (the bias or 0 always added, so -0
// turns +0 there as well).
template <int R, int V>
ZF_VNNI void store_rows(const qgemm_io& io, sz ly, const float* xs, int i0, int ob, int nout,
                        const panel_buf& p) {
  const auto* ft = reinterpret_cast<const float*>(p.tile.data());
  for (int v = 0; v < V; ++v) {
    const int n = std::min(16, nout - 16 * v), o = ob + 16 * v;
    const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
    const __m512 b = io.bias ? _mm512_maskz_loadu_ps(m, io.bias + o) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) {
      float* y = io.y + sz(i0 + r) * ly + o;
      // the _round_ forms: GCC would contract a plain mul and add into one FMA
      __m512 t = _mm512_mul_round_ps(_mm512_load_ps(ft + (sz(r) * V + v) * 16),
                                     _mm512_set1_ps(xs[i0 + r]), k_rne);
      t = _mm512_add_round_ps(t, b, k_rne);
      if (io.accumulate) t = _mm512_add_round_ps(_mm512_maskz_loadu_ps(m, y), t, k_rne);
      _mm512_mask_storeu_ps(y, m, t);
    }
  }
}

template <int R, int V>
ZF_VNNI void rows_once(const qmatrix& q, const std::uint8_t* xu, const float* xs,
                       const qgemm_io& io, sz ly, int i0, int ob, int nout, panel_buf& p) {
  tile_rows<R, V>(q, xu, i0, p);
  store_rows<R, V>(io, ly, xs, i0, ob, nout, p);
}

// Token rows [i, m) against the packed panel, 8 at a time and the rest at once.
template <int V>
ZF_VNNI void panel_rows(const qmatrix& q, const std::uint8_t* xu, const float* xs,
                        const qgemm_io& io, sz ly, int ob, int nout, panel_buf& p, int i = 0) {
  for (; i + k_rows <= io.m; i += k_rows) rows_once<k_rows, V>(q, xu, xs, io, ly, i, ob, nout, p);
  switch (io.m - i) {
    case 7:
      return rows_once<7, V>(q, xu, xs, io, ly, i, ob, nout, p);
    case 6:
      return rows_once<6, V>(q, xu, xs, io, ly, i, ob, nout, p);
    case 5:
      return rows_once<5, V>(q, xu, xs, io, ly, i, ob, nout, p);
    case 4:
      return rows_once<4, V>(q, xu, xs, io, ly, i, ob, nout, p);
    case 3:
      return rows_once<3, V>(q, xu, xs, io, ly, i, ob, nout, p);
    case 2:
      return rows_once<2, V>(q, xu, xs, io, ly, i, ob, nout, p);
    case 1:
      return rows_once<1, V>(q, xu, xs, io, ly, i, ob, nout, p);
    default:
      return;
  }
}

// ---- AMX-INT8 (optional: CPUs with it, where the kernel grants the tile state) ----
// Panels of 32 outputs (the same packing, nv = 2) against 32 token rows at a time: tiles 0-3
// hold C (int32, 16 rows x 16 outputs; tile 2 * row block + vector), 4-5 A (16 token rows x 64
// bytes, copied per call into [32-row block][k / 64][32][64] so each is 1 KiB in a row: ~15%
// faster than loading them from xu's rows), 6-7 B (16 quads x 16 outputs x 4 bytes: 16 rows of
// the packed panel, stride 128). tdpbusd multiplies u8 A by s8 B as vpdpbusd does; C starts at the
// group's -128 * code sums (one 64-byte row loaded with stride 0), a group takes group / 64
// steps of 4 tdpbusd, then C goes through memory into the same float accumulators (p.tile
// [32][2][16]) and epilogue as the VNNI tiles. Groups must be multiples of 64; the rows past
// the last 32 and a last panel of 16 outputs or fewer run the VNNI tiles.
#define ZF_AMX \
  __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

bool g_amx_off = false;

bool amx_granted() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 24 & 1) || !(d >> 25 & 1)) return false;
    // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): Linux enables AMX per process
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
}

struct alignas(64) tile_config {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// xa: the 32 token rows' bytes as A tiles, [k / 64][32 rows][64 bytes] (contiguous per step).
ZF_AMX void amx_rows32(const qmatrix& q, const std::uint8_t* xa, panel_buf& p) {
  const int G = q.groups(), steps = q.group / 64;
  const auto* pw = reinterpret_cast<const std::uint8_t*>(p.w.data());
  const auto* nc = reinterpret_cast<const std::int32_t*>(p.ncomp.data());
  const auto* sc = reinterpret_cast<const float*>(p.sc.data());
  auto* ft = reinterpret_cast<float*>(p.tile.data());
  auto* it = reinterpret_cast<std::int32_t*>(p.itile.data());
  for (int g = 0; g < G; ++g) {
    _tile_loadd(0, nc + sz(g) * 32, 0);
    _tile_loadd(1, nc + sz(g) * 32 + 16, 0);
    _tile_loadd(2, nc + sz(g) * 32, 0);
    _tile_loadd(3, nc + sz(g) * 32 + 16, 0);
    for (int st = 0; st < steps; ++st) {
      const sz kk = sz(g) * q.group + 64 * sz(st);
      _tile_loadd(4, xa + kk * 32, 64);
      _tile_loadd(5, xa + kk * 32 + 1024, 64);
      _tile_loadd(6, pw + kk / 4 * 128, 128);
      _tile_loadd(7, pw + kk / 4 * 128 + 64, 128);
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
    _tile_stored(0, it, 64);
    _tile_stored(1, it + 256, 64);
    _tile_stored(2, it + 512, 64);
    _tile_stored(3, it + 768, 64);
    for (int t = 0; t < 4; ++t) {
      const int v = t & 1;
      const __m512 s = _mm512_load_ps(sc + (sz(g) * 2 + v) * 16);
      for (int r = 0; r < 16; ++r) {
        float* f = ft + ((sz(t >> 1) * 16 + r) * 2 + v) * 16;
        const __m512 d = _mm512_cvtepi32_ps(_mm512_load_si512(it + t * 256 + r * 16));
        _mm512_store_ps(f, g ? _mm512_fmadd_ps(d, s, _mm512_load_ps(f)) : _mm512_mul_ps(d, s));
      }
    }
  }
}

ZF_AMX void gemm_amx(const qmatrix& q, const std::uint8_t* xu, const float* xs, const qgemm_io& io,
                     int o0, int o1, panel_buf& p) {
  const sz ly = io.ldy ? io.ldy : q.n;
  p.tile.resize(std::max(p.tile.size(), sz(64)));
  p.itile.resize(std::max(p.itile.size(), sz(64)));
  // the activations of every whole 32-row block as A tiles, [block][k / 64][32][64]
  thread_local std::vector<blk> xa;
  const int nb = io.m / 32, ks = q.k / 64;
  xa.resize(std::max(xa.size(), sz(nb) * ks * 32));
  auto* xav = reinterpret_cast<__m512i*>(xa.data());
  for (int b = 0; b < nb; ++b)
    for (int st = 0; st < ks; ++st)
      for (int r = 0; r < 32; ++r)
        _mm512_store_si512(xav + (sz(b) * ks + st) * 32 + r,
                           _mm512_loadu_si512(xu + (sz(b) * 32 + r) * q.k + 64 * sz(st)));
  const tile_config cfg;
  _tile_loadconfig(&cfg);
  for (int ob = o0; ob < o1; ob += 32) {
    const int nout = std::min(32, o1 - ob), nv = (nout + 15) / 16;
    pack_panel(q, ob, nout, nv, p);
    if (nv == 1) {
      panel_rows<1>(q, xu, xs, io, ly, ob, nout, p);
      continue;
    }
    int i = 0;
    for (; i + 32 <= io.m; i += 32) {
      amx_rows32(q, reinterpret_cast<const std::uint8_t*>(xav + sz(i / 32) * ks * 32), p);
      store_rows<32, 2>(io, ly, xs, i, ob, nout, p);
    }
    panel_rows<2>(q, xu, xs, io, ly, ob, nout, p, i);
  }
  _tile_release();
}

ZF_VNNI void gemm_vnni(const qmatrix& q, const std::uint8_t* xu, const float* xs,
                       const qgemm_io& io, int o0, int o1) {
  thread_local panel_buf p;
  if (!g_amx_off && io.m >= 32 && q.group % 64 == 0 && amx_granted())
    return gemm_amx(q, xu, xs, io, o0, o1, p);
  const sz ly = io.ldy ? io.ldy : q.n;
  for (int ob = o0; ob < o1; ob += k_panel) {
    const int nout = std::min(k_panel, o1 - ob), nv = (nout + 15) / 16;
    pack_panel(q, ob, nout, nv, p);
    if (nv == 3)
      panel_rows<3>(q, xu, xs, io, ly, ob, nout, p);
    else if (nv == 2)
      panel_rows<2>(q, xu, xs, io, ly, ob, nout, p);
    else
      panel_rows<1>(q, xu, xs, io, ly, ob, nout, p);
  }
}

// quantize_activations's per-token codes and scales, bit for bit (for finite x): the same
// absmax / 127, x / s rounded to nearest even and clamped to +-127; stored + 128. The quotient
// without a division (vdivps: ~10 cycles a vector): q = x * r with r = 1 / s rounded, the
// residual x - q * s (exact, one FMA) and q + residual * r (one FMA) is x / s correctly rounded
// (Markstein's theorem: r within half an ulp of 1 / s, q within one ulp of x / s), while s and
// 1 / s stay far from under- and overflow; other rows divide.
ZF_VNNI void quantize_u8_simd(const float* x, sz lx, int m, int k, std::uint8_t* xu, float* xs) {
  for (int i = 0; i < m; ++i) {
    const float* xi = x + sz(i) * lx;
    __m512 a = _mm512_setzero_ps();
    for (int j = 0; j < k; j += 16) {
      const __mmask16 lm = k - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - j)) - 1);
      a = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(lm, xi + j)), a);  // NaN: a kept
    }
    const float am = _mm512_reduce_max_ps(a);
    const float s = am > 0 ? am / 127.0f : 1.0f;
    xs[i] = s;
    const bool fast = s >= 0x1p-96f && s <= 0x1p96f;
    const __m512 sv = _mm512_set1_ps(s), rv = _mm512_set1_ps(1.0f / s);
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    const __m512i off = _mm512_set1_epi32(128);
    std::uint8_t* out = xu + sz(i) * k;
    for (int j = 0; j < k; j += 16) {
      const __mmask16 lm = k - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - j)) - 1);
      const __m512 xv = _mm512_maskz_loadu_ps(lm, xi + j);
      __m512 v;
      if (fast) {
        v = _mm512_mul_ps(xv, rv);
        v = _mm512_fmadd_ps(_mm512_fnmadd_ps(v, sv, xv), rv, v);
      } else {
        v = _mm512_div_ps(xv, sv);
      }
      v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
      const __m512i c = _mm512_add_epi32(_mm512_cvtps_epi32(v), off);
      _mm_mask_storeu_epi8(out + j, lm, _mm512_cvtepi32_epi8(c));
    }
  }
}

}  // namespace

bool quant_vnni() noexcept {
  return quant_simd() && cpu_has_vnni();
}
bool quant_amx() noexcept {
  return quant_vnni() && !g_amx_off && amx_granted();
}
void set_quant_amx(bool on) noexcept {
  g_amx_off = !on;
}

namespace cpu {

void quantize_activations_u8(const float* x, int ldx, int m, int k, std::uint8_t* xu,
                             float* scales) {
  const sz lx = ldx ? sz(ldx) : sz(k);
  if (quant_vnni()) return quantize_u8_simd(x, lx, m, k, xu, scales);
  for (int i = 0; i < m; ++i) {
    float a = 0;
    for (int j = 0; j < k; ++j) a = std::max(a, std::abs(x[i * lx + j]));
    const float s = a > 0 ? a / 127.0f : 1.0f;
    scales[i] = s;
    for (int j = 0; j < k; ++j)
      xu[sz(i) * k + j] = static_cast<std::uint8_t>(
          128 + int(std::clamp(std::nearbyint(x[i * lx + j] / s), -127.0f, 127.0f)));
  }
}

void qgemm_w8a8_gemm(const qmatrix& q, const std::uint8_t* xu, const float* xs, const qgemm_io& io,
                     int o0, int o1) {
  if (q.fmt != qformat::int8) throw std::invalid_argument("qgemm_w8a8: the weights are not int8");
  if (q.group > 65536)
    throw std::invalid_argument("qgemm_w8a8_gemm: groups over 65536 inputs overflow int32");
  if (quant_vnni()) return gemm_vnni(q, xu, xs, io, o0, o1);
  // Portable: the reference's sums, codes read back from the offset bytes.
  const int G = q.groups();
  const sz ly = io.ldy ? io.ldy : q.n;
  for (int i = 0; i < io.m; ++i)
    for (int o = o0; o < o1; ++o) {
      const auto* w = reinterpret_cast<const std::int8_t*>(q.data) + sz(o) * q.k;
      const std::uint8_t* xi = xu + sz(i) * q.k;
      float acc = 0;
      for (int g = 0; g < G; ++g) {
        std::int32_t d = 0;
        for (int j = g * q.group; j < (g + 1) * q.group; ++j) d += (int(xi[j]) - 128) * int(w[j]);
        acc = g ? std::fma(float(d), q.scales[sz(o) * G + g], acc)
                : float(d) * q.scales[sz(o) * G + g];
      }
      const float v = xs[i] * acc + (io.bias ? io.bias[o] : 0.0f);
      float& y = io.y[sz(i) * ly + o];
      y = io.accumulate ? y + v : v;
    }
}

}  // namespace cpu
}  // namespace zf::kernels
