// Attention family, CPU reference: causal multi-head self-attention as per-head OpenBLAS GEMMs.
// Invariants:
// - q/k/v/out/dq/dk/dv are read and written in place through their row strides (no copies);
//   only the n_head * head_dim head columns are touched.
// - Queries are processed in blocks of kBlock rows. Query i (absolute position offset + i) sees
//   keys 0..offset+i, so a block [i0, i1) needs keys [0, offset + i1) only: the GEMMs skip the
//   fully masked upper-right part of the score matrix (about half of it in training).
// - att rows: [0, L) softmax probabilities (L = offset + i + 1), [L, tk) exactly 0.
// - Backward keeps the same block structure. datt row i is valid (masked part zeroed) on
//   [0, offset + i1) where i1 is the end of its block; the key-side GEMMs for keys
//   [offset + i0, offset + i1) read only rows i >= i0, whose valid range covers those columns.
// - Grouped-query attention: query head h uses kv head h / group, group = n_head / n_kv_head.
//   Backward visits the query heads of a group consecutively; the first overwrites the kv head's
//   dk/dv (beta = 0) and the others accumulate into it (beta = 1). With n_kv_head == n_head every
//   head is first of its group, so the GEMM calls are exactly those of plain multi-head attention.
// - The GEMMs and softmaxes inside are cpu::gemm / cpu::softmax_rows (unqualified names in
//   namespace cpu): a backend never goes back through the dispatch.
// Nothing here allocates; att/datt are the caller's scratch.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels/attention.hpp"
#include "kernels/matmul.hpp"
#include "kernels/softmax.hpp"

namespace zf::kernels::cpu {
namespace {

constexpr int kBlock = 128;

// sum_j a[j] * b[j] over [0, n) in 16 float lanes.
float dot(const float* a, const float* b, std::size_t n) {
  float acc[16] = {};
  std::size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    for (int l = 0; l < 16; ++l) acc[l] += a[j + l] * b[j + l];
  }
  for (int l = 0; l < 8; ++l) acc[l] += acc[l + 8];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// Query heads per kv head.
int kv_group(const attention_shape& s) {
  return s.n_kv_head > 0 ? s.n_head / s.n_kv_head : 1;
}

}  // namespace

// q: [tq, ldq], k: [tk, ldk], v: [tk, ldv] -> out: [tq, ldo]; att: [n_head, tq, tk].
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att) {
  const int hd = s.head_dim, tq = s.tq, tk = s.tk, off = s.offset;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t head_stride = static_cast<std::size_t>(tq) * tk;
  const int group = kv_group(s);
  for (int h = 0; h < s.n_head; ++h) {
    const std::size_t kv_col = static_cast<std::size_t>(h / group) * hd;
    const float* qh = q + static_cast<std::size_t>(h) * hd;
    const float* kh = k + kv_col;
    const float* vh = v + kv_col;
    float* oh = out + static_cast<std::size_t>(h) * hd;
    float* ah = att + h * head_stride;
    for (int i0 = 0; i0 < tq; i0 += kBlock) {
      const int i1 = std::min(tq, i0 + kBlock), rows = i1 - i0, kv = off + i1;
      float* ab = ah + static_cast<std::size_t>(i0) * tk;
      // scores[i0:i1, 0:kv] = scale * q_h[i0:i1] @ k_h[0:kv]^T
      gemm(false, true, rows, kv, hd, scale, qh + static_cast<std::size_t>(i0) * s.ldq, s.ldq, kh,
           s.ldk, 0.0f, ab, tk);
      for (int i = i0; i < i1; ++i) {
        float* row = ah + static_cast<std::size_t>(i) * tk;
        const int visible = off + i + 1;
        softmax_rows(row, 1, visible, 1.0f);
        std::fill(row + visible, row + tk, 0.0f);
      }
      // out_h[i0:i1] = att[i0:i1, 0:kv] @ v_h[0:kv]
      gemm(false, false, rows, hd, kv, 1.0f, ab, tk, vh, s.ldv, 0.0f,
           oh + static_cast<std::size_t>(i0) * s.ldo, s.ldo);
    }
  }
}

// dout: [tq, ldo]; att: [n_head, tq, tk] from the forward; datt: [n_head, tq, tk] scratch.
// dq, dk, dv (strides ldq, ldk, ldv) overwritten in their head columns (dk/dv: n_kv_head heads).
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv) {
  const int hd = s.head_dim, tq = s.tq, tk = s.tk, off = s.offset;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t head_stride = static_cast<std::size_t>(tq) * tk;
  const int group = kv_group(s);
  for (int h = 0; h < s.n_head; ++h) {
    const std::size_t kv_col = static_cast<std::size_t>(h / group) * hd;
    // dk/dv of this kv head: overwritten by the group's first query head, accumulated after.
    const float kv_beta = h % group == 0 ? 0.0f : 1.0f;
    const float* qh = q + static_cast<std::size_t>(h) * hd;
    const float* kh = k + kv_col;
    const float* vh = v + kv_col;
    const float* doh = dout + static_cast<std::size_t>(h) * hd;
    float* dqh = dq + static_cast<std::size_t>(h) * hd;
    float* dkh = dk + kv_col;
    float* dvh = dv + kv_col;
    const float* ah = att + h * head_stride;
    float* dh = datt + h * head_stride;
    // Query side: datt -> dpre (in place) -> dq, block by block.
    for (int i0 = 0; i0 < tq; i0 += kBlock) {
      const int i1 = std::min(tq, i0 + kBlock), rows = i1 - i0, kv = off + i1;
      float* db = dh + static_cast<std::size_t>(i0) * tk;
      // datt[i0:i1, 0:kv] = dout_h[i0:i1] @ v_h[0:kv]^T
      gemm(false, true, rows, kv, hd, 1.0f, doh + static_cast<std::size_t>(i0) * s.ldo, s.ldo, vh,
           s.ldv, 0.0f, db, tk);
      for (int i = i0; i < i1; ++i) {
        const float* a = ah + static_cast<std::size_t>(i) * tk;
        float* d = dh + static_cast<std::size_t>(i) * tk;
        const int visible = off + i + 1;
        // softmax backward: dpre = att * (datt - sum(att * datt))
        const float sad = dot(a, d, static_cast<std::size_t>(visible));
        for (int j = 0; j < visible; ++j) d[j] = a[j] * (d[j] - sad);
        std::fill(d + visible, d + kv, 0.0f);
      }
      // dq_h[i0:i1] = scale * dpre[i0:i1, 0:kv] @ k_h[0:kv]
      gemm(false, false, rows, hd, kv, scale, db, tk, kh, s.ldk, 0.0f,
           dqh + static_cast<std::size_t>(i0) * s.ldq, s.ldq);
    }
    // Key side. Cached keys [0, offset) are seen by every query.
    if (off > 0) {
      gemm(true, false, off, hd, tq, 1.0f, ah, tk, doh, s.ldo, kv_beta, dvh, s.ldv);
      gemm(true, false, off, hd, tq, scale, dh, tk, qh, s.ldq, kv_beta, dkh, s.ldk);
    }
    // Keys [off + i0, off + i1) are seen by queries [i0, tq).
    for (int i0 = 0; i0 < tq; i0 += kBlock) {
      const int i1 = std::min(tq, i0 + kBlock), keys = i1 - i0, rows = tq - i0;
      const std::size_t corner = static_cast<std::size_t>(i0) * tk + off + i0;
      const std::size_t key_row = static_cast<std::size_t>(off + i0);
      // dv_h[keys] = att[i0:tq, keys]^T @ dout_h[i0:tq]
      gemm(true, false, keys, hd, rows, 1.0f, ah + corner, tk,
           doh + static_cast<std::size_t>(i0) * s.ldo, s.ldo, kv_beta, dvh + key_row * s.ldv,
           s.ldv);
      // dk_h[keys] = scale * dpre[i0:tq, keys]^T @ q_h[i0:tq]
      gemm(true, false, keys, hd, rows, scale, dh + corner, tk,
           qh + static_cast<std::size_t>(i0) * s.ldq, s.ldq, kv_beta, dkh + key_row * s.ldk, s.ldk);
    }
  }
}

}  // namespace zf::kernels::cpu
