// Attention family, CPU reference: causal multi-head self-attention as GEMMs of the tuned library.
// Invariants:
// - q/k/v/out/dq/dk/dv are read and written through their row strides; only the
//   n_head * head_dim head columns are touched. (The batched path below gathers them into dense
//   per-head copies, in per-thread scratch grown once.)
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
//   namespace cpu) or the library's own calls: a backend never goes back through the dispatch.
// - Where the process's GEMM library is oneDNN (gemm_nests), heads run on the OpenMP team, or a
//   whole training sequence as batched matmuls (batched_forward / batched_backward below).
// att/datt are the caller's scratch.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/gemm_backends.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/matmul.hpp"
#include "kernels/parallel.hpp"
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

// The GEMMs of one call. Where the process's library nests (gemm_lib.hpp gemm_nests: oneDNN),
// the kv-head groups are split over an OpenMP team and each thread runs its heads' GEMMs, row
// softmaxes and all, alone: the per-head GEMMs are too small (128x64x256 at GPT-2's shape) to
// pay for waking a team each, and the softmax between them ran on one core (issue 16's profile:
// ~1150 GEMM calls per step). Elsewhere heads run in turn with the library's own threads.
struct head_runner {
  precision p = compute_precision();
  gemm_lib lib = process_gemm_lib(p);
  bool nested = gemm_nests(lib);

  void mm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) const {
    if (nested) return gemm_run(lib, p, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  // fn(g) for every kv-head group g in [0, groups): heads sharing dk/dv stay on one thread.
  template <class F>
  void each_group(int groups, F&& fn) const {
    if (!nested) {
      for (int g = 0; g < groups; ++g) fn(g);
      return;
    }
    parallel_ranges(static_cast<std::size_t>(groups), 1, 2, [&](std::size_t b, std::size_t e) {
      const precision_scope compute(p);  // the team's threads have their own precision
      for (std::size_t g = b; g < e; ++g) fn(static_cast<int>(g));
    });
  }
};

// One query head of attention_forward.
void forward_head(const head_runner& r, const attention_shape& s, int h, const float* q,
                  const float* k, const float* v, float* out, float* att) {
  const int hd = s.head_dim, tq = s.tq, tk = s.tk, off = s.offset;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t kv_col = static_cast<std::size_t>(h / kv_group(s)) * hd;
  const float* qh = q + static_cast<std::size_t>(h) * hd;
  const float* kh = k + kv_col;
  const float* vh = v + kv_col;
  float* oh = out + static_cast<std::size_t>(h) * hd;
  float* ah = att + h * static_cast<std::size_t>(tq) * tk;
  for (int i0 = 0; i0 < tq; i0 += kBlock) {
    const int i1 = std::min(tq, i0 + kBlock), rows = i1 - i0, kv = off + i1;
    float* ab = ah + static_cast<std::size_t>(i0) * tk;
    // scores[i0:i1, 0:kv] = scale * q_h[i0:i1] @ k_h[0:kv]^T
    r.mm(false, true, rows, kv, hd, scale, qh + static_cast<std::size_t>(i0) * s.ldq, s.ldq, kh,
         s.ldk, 0.0f, ab, tk);
    for (int i = i0; i < i1; ++i) {
      float* row = ah + static_cast<std::size_t>(i) * tk;
      const int visible = off + i + 1;
      softmax_rows(row, 1, visible, 1.0f);
      std::fill(row + visible, row + tk, 0.0f);
    }
    // out_h[i0:i1] = att[i0:i1, 0:kv] @ v_h[0:kv]
    r.mm(false, false, rows, hd, kv, 1.0f, ab, tk, vh, s.ldv, 0.0f,
         oh + static_cast<std::size_t>(i0) * s.ldo, s.ldo);
  }
}

// One query head of attention_backward; kv_beta 0 for the first head of its group (overwrite
// dk/dv), 1 after (accumulate).
void backward_head(const head_runner& r, const attention_shape& s, int h, const float* q,
                   const float* k, const float* v, const float* att, const float* dout, float* datt,
                   float* dq, float* dk, float* dv) {
  const int hd = s.head_dim, tq = s.tq, tk = s.tk, off = s.offset, group = kv_group(s);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t head_stride = static_cast<std::size_t>(tq) * tk;
  const std::size_t kv_col = static_cast<std::size_t>(h / group) * hd;
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
    r.mm(false, true, rows, kv, hd, 1.0f, doh + static_cast<std::size_t>(i0) * s.ldo, s.ldo, vh,
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
    r.mm(false, false, rows, hd, kv, scale, db, tk, kh, s.ldk, 0.0f,
         dqh + static_cast<std::size_t>(i0) * s.ldq, s.ldq);
  }
  // Key side. Cached keys [0, offset) are seen by every query.
  if (off > 0) {
    r.mm(true, false, off, hd, tq, 1.0f, ah, tk, doh, s.ldo, kv_beta, dvh, s.ldv);
    r.mm(true, false, off, hd, tq, scale, dh, tk, qh, s.ldq, kv_beta, dkh, s.ldk);
  }
  // Keys [off + i0, off + i1) are seen by queries [i0, tq).
  for (int i0 = 0; i0 < tq; i0 += kBlock) {
    const int i1 = std::min(tq, i0 + kBlock), keys = i1 - i0, rows = tq - i0;
    const std::size_t corner = static_cast<std::size_t>(i0) * tk + off + i0;
    const std::size_t key_row = static_cast<std::size_t>(off + i0);
    // dv_h[keys] = att[i0:tq, keys]^T @ dout_h[i0:tq]
    r.mm(true, false, keys, hd, rows, 1.0f, ah + corner, tk,
         doh + static_cast<std::size_t>(i0) * s.ldo, s.ldo, kv_beta, dvh + key_row * s.ldv, s.ldv);
    // dk_h[keys] = scale * dpre[i0:tq, keys]^T @ q_h[i0:tq]
    r.mm(true, false, keys, hd, rows, scale, dh + corner, tk,
         qh + static_cast<std::size_t>(i0) * s.ldq, s.ldq, kv_beta, dkh + key_row * s.ldk, s.ldk);
  }
}

// Whole-sequence attention as oneDNN batched matmuls over the heads (training and prefill:
// offset 0, plain multi-head, the process's library nesting, bf16 or f32). Six library calls
// per layer and sequence instead of ~150 per-head ones whose fixed costs (a primitive execution
// and two operand roundings each, ~60 us) outweighed their 2 MFLOP; the scores are computed in
// full (the causal half is masked, not skipped), which AMX/AVX-512 pays for many times over.
// Operands are gathered into dense per-head [H, t, hd] copies first (rounded under bf16): the
// AMX kernels take dense layouts only; on the row-strided views oneDNN fell back to a generic
// GEMM 10x slower. Numbers: the same products of the same rounded operands as the per-head path,
// summed in another order (zeros included).
struct batched_scratch {
  std::vector<std::uint16_t> q, k, v, o, a;  // [H, t, hd] x4 and [H, t, t], bf16 or f32 bits
  std::vector<float> out;                    // [H, t, hd] product before its scatter
};
batched_scratch& tl_batched() {
  thread_local batched_scratch s;
  return s;
}
// n elements of bf16 (bf) or f32 bits in a 16-bit buffer.
void* grown_for(std::vector<std::uint16_t>& v, std::size_t n, bool bf) {
  return grown(v, n * (bf ? 1 : 2));
}

bool batched_fits(const head_runner& r, const attention_shape& s) {
  return r.nested && r.p != precision::f16 && s.offset == 0 && kv_group(s) == 1 && s.tq == s.tk;
}

struct dense_heads {
  int H, t, hd;
  bool bf;
  std::int64_t dims[3] = {H, t, hd};
  std::int64_t dense[3] = {std::int64_t(t) * hd, hd, 1};
  // x's head columns (row stride ld) -> dense [H, t, hd] in buf; as an operand transposed or not.
  backend::strided gather(const float* x, int ld, bool trans, std::vector<std::uint16_t>& buf) {
    const std::int64_t st[3] = {hd, ld, 1};
    void* d = grown_for(buf, static_cast<std::size_t>(H) * t * hd, bf);
    backend::onednn_copy3(dims, x, false, st, d, bf, dense);
    return trans ? backend::strided{d, dense[0], 1, hd} : backend::strided{d, dense[0], hd, 1};
  }
  // dense [H, t, hd] f32 -> y's head columns (row stride ld).
  void scatter(const float* src, float* y, int ld) {
    const std::int64_t st[3] = {hd, ld, 1};
    backend::onednn_copy3(dims, src, false, dense, y, false, st);
  }
  // p [H, t, t] f32 (dense) as an operand, rounded into buf under bf16.
  backend::strided probs(const float* p, bool trans, std::vector<std::uint16_t>& buf) {
    const std::int64_t tt = std::int64_t(t) * t;
    const void* d = p;
    if (bf) {
      auto* b = static_cast<std::uint16_t*>(grown_for(buf, static_cast<std::size_t>(H) * tt, bf));
      backend::onednn_to_bf16(p, H * t, t, t, b);
      d = b;
    }
    return trans ? backend::strided{d, tt, 1, t} : backend::strided{d, tt, t, 1};
  }
};

void batched_forward(const head_runner& r, const attention_shape& s, const float* q, const float* k,
                     const float* v, float* out, float* att) {
  const int H = s.n_head, hd = s.head_dim, t = s.tq;
  dense_heads x{H, t, hd, r.p == precision::bf16};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  batched_scratch& b = tl_batched();
  const std::int64_t tt = static_cast<std::int64_t>(t) * t;
  // scores[h] = scale * q_h @ k_h^T  [H, t, t]
  backend::onednn_batched(x.bf, H, t, t, hd, scale, x.gather(q, s.ldq, false, b.q),
                          x.gather(k, s.ldk, true, b.k), 0.0f, att, tt, t);
  parallel_ranges(static_cast<std::size_t>(H) * t, 1, 64, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t row = r0; row < r1; ++row) {
      float* p = att + row * t;
      const int visible = static_cast<int>(row % t) + 1;
      softmax_rows(p, 1, visible, 1.0f);
      std::fill(p + visible, p + t, 0.0f);
    }
  });
  // out_h = att_h @ v_h  [H, t, hd], then into out's head columns
  float* o = grown(b.out, static_cast<std::size_t>(H) * t * hd);
  backend::onednn_batched(x.bf, H, t, hd, t, 1.0f, x.probs(att, false, b.a),
                          x.gather(v, s.ldv, false, b.v), 0.0f, o, x.dense[0], hd);
  x.scatter(o, out, s.ldo);
}

void batched_backward(const head_runner& r, const attention_shape& s, const float* q,
                      const float* k, const float* v, const float* att, const float* dout,
                      float* datt, float* dq, float* dk, float* dv) {
  const int H = s.n_head, hd = s.head_dim, t = s.tq;
  dense_heads x{H, t, hd, r.p == precision::bf16};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  batched_scratch& b = tl_batched();
  const std::int64_t tt = static_cast<std::int64_t>(t) * t;
  float* tmp = grown(b.out, static_cast<std::size_t>(H) * t * hd);
  const backend::strided o = x.gather(dout, s.ldo, false, b.o);
  // datt[h] = dout_h @ v_h^T
  backend::onednn_batched(x.bf, H, t, t, hd, 1.0f, o, x.gather(v, s.ldv, true, b.v), 0.0f, datt, tt,
                          t);
  // dv_h = att_h^T @ dout_h (before b.a is reused for dpre)
  backend::onednn_batched(x.bf, H, t, hd, t, 1.0f, x.probs(att, true, b.a), o, 0.0f, tmp,
                          x.dense[0], hd);
  x.scatter(tmp, dv, s.ldv);
  // softmax backward in place: dpre = att * (datt - sum(att * datt)), masked part 0
  parallel_ranges(static_cast<std::size_t>(H) * t, 1, 64, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t row = r0; row < r1; ++row) {
      const float* a = att + row * t;
      float* d = datt + row * t;
      const int visible = static_cast<int>(row % t) + 1;
      const float sad = dot(a, d, static_cast<std::size_t>(visible));
      for (int j = 0; j < visible; ++j) d[j] = a[j] * (d[j] - sad);
      std::fill(d + visible, d + t, 0.0f);
    }
  });
  const backend::strided dp = x.probs(datt, false, b.a);
  const backend::strided dpt{dp.data, tt, 1, t};
  // dq_h = scale * dpre_h @ k_h;  dk_h = scale * dpre_h^T @ q_h
  backend::onednn_batched(x.bf, H, t, hd, t, scale, dp, x.gather(k, s.ldk, false, b.k), 0.0f, tmp,
                          x.dense[0], hd);
  x.scatter(tmp, dq, s.ldq);
  backend::onednn_batched(x.bf, H, t, hd, t, scale, dpt, x.gather(q, s.ldq, false, b.q), 0.0f, tmp,
                          x.dense[0], hd);
  x.scatter(tmp, dk, s.ldk);
}

}  // namespace

// q: [tq, ldq], k: [tk, ldk], v: [tk, ldv] -> out: [tq, ldo]; att: [n_head, tq, tk].
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att) {
  const head_runner r;
  if (batched_fits(r, s)) return batched_forward(r, s, q, k, v, out, att);
  const int group = kv_group(s);
  r.each_group(s.n_head / group, [&](int g) {
    for (int h = g * group; h < (g + 1) * group; ++h) forward_head(r, s, h, q, k, v, out, att);
  });
}

// dout: [tq, ldo]; att: [n_head, tq, tk] from the forward; datt: [n_head, tq, tk] scratch.
// dq, dk, dv (strides ldq, ldk, ldv) overwritten in their head columns (dk/dv: n_kv_head heads).
// The query heads of a group run in order on one thread: the first overwrites the kv head's
// dk/dv, the others add to it.
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv) {
  const head_runner r;
  if (batched_fits(r, s)) return batched_backward(r, s, q, k, v, att, dout, datt, dq, dk, dv);
  const int group = kv_group(s);
  r.each_group(s.n_head / group, [&](int g) {
    for (int h = g * group; h < (g + 1) * group; ++h)
      backward_head(r, s, h, q, k, v, att, dout, datt, dq, dk, dv);
  });
}

}  // namespace zf::kernels::cpu
