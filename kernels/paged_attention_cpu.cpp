// Paged attention, CPU. Direct path (tq <= kDirectRows): per query row, scores of every head
// against every visible key (keys visited block by block, each key row read once for all the
// heads that share it), a softmax per head, then the value rows accumulated the same way.
// Gather path: the visible K/V rows are copied into contiguous scratch once and each query
// head runs attention_forward (two GEMMs) against its kv head's columns.
// K/V rows are fp32 or bf16 (paged_kv::k16, v16): bf16 ones are widened as they are read (direct)
// or gathered (gather path), the math fp32 throughout.
// Nothing here allocates.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/attention.hpp"
#include "kernels/convert.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/softmax.hpp"
#include "kernels/vec8.hpp"

namespace zf::kernels::cpu {
namespace {

using namespace vec8;
constexpr int kDirectRows = paged_direct_rows;

// K/V elements as fp32: a float as it is, bf16 bits widened (exact; vec8::load8 for 8 lanes).
inline float at(const float* p, int j) {
  return p[j];
}
inline float at(const std::uint16_t* p, int j) {
  return bf16_to_f32(p[j]);
}

// T: float or bf16 bits; the same operations in the same order either way (the tails fused
// explicitly, as -mfma -ffp-contract=fast fuses the float ones anyway).
template <class T>
float dot(const float* a, const T* b, int n) {
  v8f acc0 = {}, acc1 = {};
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    acc0 += load8(a + j) * load8(b + j);
    acc1 += load8(a + j + 8) * load8(b + j + 8);
  }
  for (; j + 8 <= n; j += 8) acc0 += load8(a + j) * load8(b + j);
  float s = hsum(acc0 + acc1);
  for (; j < n; ++j) s = std::fma(a[j], at(b, j), s);
  return s;
}

template <class T>
void axpy(float a, const T* x, float* y, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8) store8(y + j, load8(y + j) + a * load8(x + j));
  for (; j < n; ++j) y[j] = std::fma(a, at(x, j), y[j]);
}

// Row pos of a pool with rows of `stride` elements (kv_dim in the paged pool).
template <class T>
const T* row_of(const T* pool, const paged_kv& kv, int pos, int stride) {
  const std::size_t b = static_cast<std::size_t>(kv.blocks[pos / kv.block_size]);
  return pool + (b * kv.block_size + pos % kv.block_size) * static_cast<std::size_t>(stride);
}
template <class T>
const T* row_of(const T* pool, const paged_kv& kv, int pos) {
  return row_of(pool, kv, pos, kv.kv_dim);
}

// One query row at absolute position pos, alone: the scores of every head against keys 0..pos
// (each key row read once for all the heads that share it), a softmax per head, then the value
// rows accumulated in key order. scores: head h's pos + 1 scores at scores + h * head_stride
// (left there as probabilities). v_stride: row stride of the V pool. The same operations in the
// same order for a row whatever chunk or batch it came in: batch-invariant mode relies on it.
template <class T>
void direct_row(const paged_shape& s, const float* q, const T* kpool, const T* vpool,
                const paged_kv& kv, int pos, float* out, float* scores, std::size_t head_stride,
                int v_stride) {
  const int hd = s.head_dim, group = s.n_head / s.n_kv_head, n = pos + 1;
  const int h0 = s.head_begin, h1 = s.head_end ? s.head_end : s.n_head;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int j = 0; j < n; ++j) {
    const T* kr = row_of(kpool, kv, j);
    for (int h = h0; h < h1; ++h)
      scores[h * head_stride + j] = scale * dot(q + h * hd, kr + (h / group) * hd, hd);
  }
  for (int h = h0; h < h1; ++h) softmax_rows(scores + h * head_stride, 1, n, 1.0f);
  std::fill(out + h0 * hd, out + h1 * hd, 0.0f);
  for (int j = 0; j < n; ++j) {
    const T* vr = row_of(vpool, kv, j, v_stride);
    for (int h = h0; h < h1; ++h)
      axpy(scores[h * head_stride + j], vr + (h / group) * hd, out + h * hd, hd);
  }
}

// The same row over fp32 or bf16 pools (kv.k16 set: bf16).
void direct_row_of(const paged_shape& s, const float* q, const paged_kv& kv, int pos, float* out,
                   float* scores, std::size_t head_stride, int v_stride) {
  if (kv.k16) return direct_row(s, q, kv.k16, kv.v16, kv, pos, out, scores, head_stride, v_stride);
  direct_row(s, q, kv.k, kv.v, kv, pos, out, scores, head_stride, v_stride);
}

void direct_rows(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                 float* scratch) {
  for (int i = 0; i < s.tq; ++i) {
    direct_row_of(s, q + static_cast<std::size_t>(i) * s.ldq, kv, s.start + i,
                  out + static_cast<std::size_t>(i) * s.ldo, scratch,
                  static_cast<std::size_t>(s.start + i + 1), kv.kv_dim);
  }
}

// Rows [p0, p0 + rows) of a pool into dense [rows, kv_dim] fp32 (bf16 widened exactly).
void gather_rows(const paged_kv& kv, bool values, int p0, int rows, float* dst) {
  const std::size_t n = static_cast<std::size_t>(rows) * kv.kv_dim;
  if (!kv.k16)
    return (void)std::memcpy(dst, row_of(values ? kv.v : kv.k, kv, p0), n * sizeof(float));
  bf16_to_f32(row_of(values ? kv.v16 : kv.k16, kv, p0), dst, n);
}

}  // namespace

// Covers both paths: the gather path's need exceeds the direct path's n_head * ctx.
long paged_attention_scratch(const paged_shape& s) {
  const long ctx = s.start + s.tq;
  const long direct = static_cast<long>(s.n_head) * ctx;
  if (s.tq <= kDirectRows) return direct;
  return std::max(direct, 2 * ctx * s.n_kv_head * s.head_dim + static_cast<long>(s.tq) * ctx);
}

// q: [tq, ldq] -> out: [tq, ldo].
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch, bool direct_only) {
  const int group = s.n_kv_head > 0 ? s.n_head / s.n_kv_head : 0;
  if (s.head_end != 0 && (s.head_begin < 0 || s.head_end > s.n_head || s.head_begin >= s.head_end ||
                          group < 1 || s.head_begin % group != 0 || s.head_end % group != 0))
    throw std::invalid_argument("paged_attention: heads [" + std::to_string(s.head_begin) + ", " +
                                std::to_string(s.head_end) + ") are not whole kv-head groups of " +
                                std::to_string(s.n_head) + " heads");
  if (s.tq <= kDirectRows || direct_only) {
    direct_rows(s, q, kv, out, scratch);
    return;
  }
  const int ctx = s.start + s.tq, kvd = kv.kv_dim, hd = s.head_dim;
  float* kb = scratch;  // [ctx, kv_dim]
  float* vb = kb + static_cast<std::size_t>(ctx) * kvd;
  float* att = vb + static_cast<std::size_t>(ctx) * kvd;  // [tq, ctx]
  for (int p0 = 0; p0 < ctx; p0 += kv.block_size) {
    const int rows = std::min(kv.block_size, ctx - p0);
    gather_rows(kv, false, p0, rows, kb + static_cast<std::size_t>(p0) * kvd);
    gather_rows(kv, true, p0, rows, vb + static_cast<std::size_t>(p0) * kvd);
  }
  attention_shape a{.tq = s.tq,
                    .tk = ctx,
                    .offset = s.start,
                    .n_head = 1,
                    .head_dim = hd,
                    .ldq = s.ldq,
                    .ldk = kvd,
                    .ldv = kvd,
                    .ldo = s.ldo};
  for (int h = s.head_begin; h < (s.head_end ? s.head_end : s.n_head); ++h) {
    const int g = h / group;
    cpu::attention_forward(a, q + h * hd, kb + g * hd, vb + g * hd, out + h * hd, att);
  }
}

// Dense K/V rows are a pool of one block as long as the sequence: row_of(k, kv, j) = k + j ldk.
void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16) {
  const std::size_t d = static_cast<std::size_t>(kv_dim);
  for (int r = 0; r < n; ++r) {
    const std::size_t dst = static_cast<std::size_t>(slot[r]) * d,
                      src = static_cast<std::size_t>(r) * static_cast<std::size_t>(ld);
    if (k16) {
      f32_to_bf16(k_src + src, k16 + dst, d);
      f32_to_bf16(v_src + src, v16 + dst, d);
    } else {
      std::memcpy(k + dst, k_src + src, d * sizeof(float));
      std::memcpy(v + dst, v_src + src, d * sizeof(float));
    }
  }
}

void attention_forward_rows(const attention_shape& a, const float* q, const float* k,
                            const float* v, float* out, float* att) {
  const int kvh = a.n_kv_head ? a.n_kv_head : a.n_head;
  const int block0 = 0;
  const paged_kv kv{.k = k, .v = v, .blocks = &block0, .block_size = a.tk, .kv_dim = a.ldk};
  const paged_shape s{.tq = a.tq,
                      .start = a.offset,
                      .n_head = a.n_head,
                      .n_kv_head = kvh,
                      .head_dim = a.head_dim,
                      .ldq = a.ldq,
                      .ldo = a.ldo};
  const std::size_t head_stride = static_cast<std::size_t>(a.tq) * a.tk;
  for (int i = 0; i < a.tq; ++i) {
    const int pos = a.offset + i;
    float* scores = att + static_cast<std::size_t>(i) * a.tk;  // head h at + h * head_stride
    direct_row_of(s, q + static_cast<std::size_t>(i) * a.ldq, kv, pos,
                  out + static_cast<std::size_t>(i) * a.ldo, scores, head_stride, a.ldv);
    for (int h = 0; h < a.n_head; ++h)
      std::fill(scores + h * head_stride + pos + 1, scores + h * head_stride + a.tk, 0.0f);
  }
}

}  // namespace zf::kernels::cpu
