// Paged attention, CPU. Direct path (tq <= kDirectRows): per query row, scores of every head
// against every visible key (keys visited block by block, each key row read once for all the
// heads that share it), a softmax per head, then the value rows accumulated the same way.
// Gather path: the visible K/V rows are copied into contiguous scratch once and each query
// head runs attention_forward (two GEMMs) against its kv head's columns.
// Nothing here allocates.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "kernels/attention.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/softmax.hpp"
#include "kernels/vec8.hpp"

namespace zf::kernels {
namespace {

using namespace vec8;
constexpr int kDirectRows = paged_direct_rows;

float dot(const float* a, const float* b, int n) {
  v8f acc0 = {}, acc1 = {};
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    acc0 += load8(a + j) * load8(b + j);
    acc1 += load8(a + j + 8) * load8(b + j + 8);
  }
  for (; j + 8 <= n; j += 8) acc0 += load8(a + j) * load8(b + j);
  float s = hsum(acc0 + acc1);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

void axpy(float a, const float* x, float* y, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8) store8(y + j, load8(y + j) + a * load8(x + j));
  for (; j < n; ++j) y[j] += a * x[j];
}

const float* row_of(const float* pool, const paged_kv& kv, int pos) {
  const std::size_t b = static_cast<std::size_t>(kv.blocks[pos / kv.block_size]);
  return pool + (b * kv.block_size + pos % kv.block_size) * kv.kv_dim;
}

// One query row at absolute position pos. scores: [n_head, pos + 1].
void direct_row(const paged_shape& s, const float* q, const paged_kv& kv, int pos, float* out,
                float* scores) {
  const int hd = s.head_dim, group = s.n_head / s.n_kv_head, n = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int j = 0; j < n; ++j) {
    const float* kr = row_of(kv.k, kv, j);
    for (int h = 0; h < s.n_head; ++h)
      scores[static_cast<std::size_t>(h) * n + j] =
          scale * dot(q + h * hd, kr + (h / group) * hd, hd);
  }
  for (int h = 0; h < s.n_head; ++h)
    softmax_rows(scores + static_cast<std::size_t>(h) * n, 1, n, 1.0f);
  std::fill(out, out + s.n_head * hd, 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* vr = row_of(kv.v, kv, j);
    for (int h = 0; h < s.n_head; ++h)
      axpy(scores[static_cast<std::size_t>(h) * n + j], vr + (h / group) * hd, out + h * hd, hd);
  }
}

}  // namespace

long paged_attention_scratch(const paged_shape& s) {
  const long ctx = s.start + s.tq;
  if (s.tq <= kDirectRows) return static_cast<long>(s.n_head) * ctx;
  return 2 * ctx * s.n_kv_head * s.head_dim + static_cast<long>(s.tq) * ctx;
}

// q: [tq, ldq] -> out: [tq, ldo].
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch) {
  if (s.tq <= kDirectRows) {
    for (int i = 0; i < s.tq; ++i) {
      direct_row(s, q + static_cast<std::size_t>(i) * s.ldq, kv, s.start + i,
                 out + static_cast<std::size_t>(i) * s.ldo, scratch);
    }
    return;
  }
  const int ctx = s.start + s.tq, kvd = kv.kv_dim, hd = s.head_dim;
  float* kb = scratch;  // [ctx, kv_dim]
  float* vb = kb + static_cast<std::size_t>(ctx) * kvd;
  float* att = vb + static_cast<std::size_t>(ctx) * kvd;  // [tq, ctx]
  for (int p0 = 0; p0 < ctx; p0 += kv.block_size) {
    const int rows = std::min(kv.block_size, ctx - p0);
    const std::size_t bytes = static_cast<std::size_t>(rows) * kvd * sizeof(float);
    std::memcpy(kb + static_cast<std::size_t>(p0) * kvd, row_of(kv.k, kv, p0), bytes);
    std::memcpy(vb + static_cast<std::size_t>(p0) * kvd, row_of(kv.v, kv, p0), bytes);
  }
  const int group = s.n_head / s.n_kv_head;
  attention_shape a{.tq = s.tq,
                    .tk = ctx,
                    .offset = s.start,
                    .n_head = 1,
                    .head_dim = hd,
                    .ldq = s.ldq,
                    .ldk = kvd,
                    .ldv = kvd,
                    .ldo = s.ldo};
  for (int h = 0; h < s.n_head; ++h) {
    const int g = h / group;
    attention_forward(a, q + h * hd, kb + g * hd, vb + g * hd, out + h * hd, att);
  }
}

}  // namespace zf::kernels
