// Ragged serving forward (see lm.hpp). Rows of the batch are the chunks' tokens back to back:
// chunk c owns rows [row0_c, row0_c + len_c). Shapes below: n = rows in this forward,
// C = hidden, Q = q_dim, KV = kv_dim, D = qkv_dim = Q + 2 KV, I = intermediate.
#include "runtime/lm.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/rope.hpp"
#include "runtime/config.hpp"
#include "runtime/error.hpp"
#include "runtime/model.hpp"

namespace zf {
namespace k = kernels;

namespace {

// y[r, :] += b for each of n rows of width c.
void add_bias(float* y, const float* b, int n, int c) {
  if (b == nullptr) return;
  for (int r = 0; r < n; ++r) k::accumulate(y + static_cast<std::size_t>(r) * c, b, c);
}

}  // namespace

std::vector<double> rope_inv_freq(const lm_config& c) {
  const rope_scaling& s = c.rope;
  std::vector<double> inv(static_cast<std::size_t>(c.head_dim / 2));
  for (std::size_t i = 0; i < inv.size(); ++i) {
    double f = std::pow(static_cast<double>(c.rope_theta), -2.0 * double(i) / c.head_dim);
    if (s.type == rope_scaling::kind::linear) {
      f /= s.factor;
    } else if (s.type == rope_scaling::kind::llama3) {
      // Wavelengths (in positions) against the pre-training context: those well inside it
      // (< old / high) keep their frequency, those beyond old / low are interpolated by factor,
      // and the band between blends the two linearly in old / wavelen.
      const double old_ctx = s.original_max_positions;
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > old_ctx / s.low_freq_factor) {
        f /= s.factor;
      } else if (wavelen >= old_ctx / s.high_freq_factor) {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[i] = f;
  }
  return inv;
}

lm_runner::lm_runner(const lm_weights& w, int max_rows, int max_logits, int threads)
    : w_(w), max_rows_(max_rows), max_logits_(max_logits), pool_(std::max(1, threads)) {
  const lm_config& c = w.cfg;
  if (max_rows < 1 || max_logits < 1) fail("lm_runner: max_rows and max_logits must be >= 1");
  const bool llama = c.arch == lm_arch::llama;
  const int mlp_w = llama ? 2 * c.intermediate : c.intermediate;
  // Worst attention scratch: a chunk of max_rows queries at the end of a full context.
  k::paged_shape worst{.tq = std::min(max_rows, c.max_positions),
                       .start = c.max_positions - std::min(max_rows, c.max_positions),
                       .n_head = c.n_head,
                       .n_kv_head = c.n_kv_head,
                       .head_dim = c.head_dim};
  const std::size_t R = static_cast<std::size_t>(max_rows),
                    L = static_cast<std::size_t>(max_logits);
  for (int pass = 0; pass < 2; ++pass) {
    x_ = scratch_.take(R * c.hidden);
    ln_ = scratch_.take(R * c.hidden);
    qkv_ = scratch_.take(R * c.qkv_dim());
    att_ = scratch_.take(R * c.q_dim());
    mlp_ = scratch_.take(R * mlp_w);
    act_ = llama ? scratch_.take(R * c.intermediate) : nullptr;
    attn_scratch_ = scratch_.take(static_cast<std::size_t>(k::paged_attention_scratch(worst)));
    decode_scratch_stride_ = static_cast<std::size_t>(c.n_head) * c.max_positions;
    decode_scratch_ = scratch_.take(decode_scratch_stride_ * pool_.size());
    lnf_ = scratch_.take(L * c.hidden);
    logits_ = scratch_.take(L * c.vocab_size);
    if (llama) {
      rope_cos_ = scratch_.take(static_cast<std::size_t>(c.max_positions) * c.head_dim / 2);
      rope_sin_ = scratch_.take(static_cast<std::size_t>(c.max_positions) * c.head_dim / 2);
    }
    if (pass == 0) scratch_.reserve();
  }
  if (llama) {
    const std::vector<double> inv_freq = rope_inv_freq(c);
    k::rope_tables(c.max_positions, c.head_dim, inv_freq.data(), rope_cos_, rope_sin_);
  }
  pos_.resize(R);
}

void lm_runner::norm(const float* x, const float* w, const float* b, float* y, int n) const {
  const lm_config& c = w_.cfg;
  if (c.arch == lm_arch::llama) {
    k::rmsnorm_forward(x, w, y, n, c.hidden, c.norm_eps);
  } else {
    k::layernorm_forward(x, w, b, y, nullptr, nullptr, n, c.hidden, c.norm_eps);
  }
}

// qkv = norm1(x) @ qkv_w; rope; K/V into the pool; attention per chunk; x += att @ o_w.
void lm_runner::attention_layer(int l, std::span<const lm_chunk> chunks, kv_storage& kv, int n) {
  const lm_config& c = w_.cfg;
  const lm_layer& L = w_.layers[static_cast<std::size_t>(l)];
  const int C = c.hidden, Q = c.q_dim(), KV = c.kv_dim(), D = c.qkv_dim(), bs = kv.block_size();
  norm(x_, L.norm1_w, L.norm1_b, ln_, n);
  k::gemm(false, false, n, D, C, 1.0f, ln_, C, L.qkv_w, D, 0.0f, qkv_, D);
  add_bias(qkv_, L.qkv_b, n, D);
  if (c.arch == lm_arch::llama) {
    k::rope_forward(qkv_, D, n, pos_.data(), c.n_head, c.head_dim, rope_cos_, rope_sin_);
    k::rope_forward(qkv_ + Q, D, n, pos_.data(), c.n_kv_head, c.head_dim, rope_cos_, rope_sin_);
  }
  // K/V of every row into the pool first: chunks then only read.
  int row = 0;
  row0_.clear();
  direct_.clear();
  for (std::size_t ci = 0; ci < chunks.size(); ++ci) {
    const lm_chunk& ch = chunks[ci];
    row0_.push_back(row);
    for (int i = 0; i < ch.len; ++i) {
      const int p = ch.start + i, b = ch.blocks[p / bs];
      const float* src = qkv_ + static_cast<std::size_t>(row + i) * D;
      const std::size_t off = static_cast<std::size_t>(p % bs) * KV;
      std::memcpy(kv.k(l, b) + off, src + Q, KV * sizeof(float));
      std::memcpy(kv.v(l, b) + off, src + Q + KV, KV * sizeof(float));
    }
    if (ch.len <= k::paged_direct_rows) direct_.push_back(static_cast<int>(ci));
    row += ch.len;
  }
  auto attend = [&](std::size_t ci, float* scratch) {
    const lm_chunk& ch = chunks[ci];
    const int r0 = row0_[ci];
    k::paged_shape s{.tq = ch.len,
                     .start = ch.start,
                     .n_head = c.n_head,
                     .n_kv_head = c.n_kv_head,
                     .head_dim = c.head_dim,
                     .ldq = D,
                     .ldo = Q};
    k::paged_kv pk{
        .k = kv.k(l, 0), .v = kv.v(l, 0), .blocks = ch.blocks, .block_size = bs, .kv_dim = KV};
    k::paged_attention(s, qkv_ + static_cast<std::size_t>(r0) * D, pk,
                       att_ + static_cast<std::size_t>(r0) * Q, scratch);
  };
  // Prefill chunks one at a time (their GEMMs are threaded by OpenBLAS); decode-sized chunks
  // spread over the worker pool, each thread with its own scratch.
  for (std::size_t ci = 0; ci < chunks.size(); ++ci)
    if (chunks[ci].len > k::paged_direct_rows) attend(ci, attn_scratch_);
  pool_.run(static_cast<int>(direct_.size()), [&](int worker, int j) {
    attend(static_cast<std::size_t>(direct_[static_cast<std::size_t>(j)]),
           decode_scratch_ + decode_scratch_stride_ * static_cast<std::size_t>(worker));
  });
  k::gemm(false, false, n, C, Q, 1.0f, att_, Q, L.o_w, C, 1.0f, x_, C);
  add_bias(x_, L.o_b, n, C);
}

// x += act(norm2(x) @ up_w) @ down_w
void lm_runner::mlp_layer(const lm_layer& L, int n) {
  const lm_config& c = w_.cfg;
  const int C = c.hidden, I = c.intermediate;
  norm(x_, L.norm2_w, L.norm2_b, ln_, n);
  const float* h = mlp_;
  if (c.arch == lm_arch::llama) {
    k::gemm(false, false, n, 2 * I, C, 1.0f, ln_, C, L.up_w, 2 * I, 0.0f, mlp_, 2 * I);
    k::swiglu_forward(mlp_, act_, n, I);
    h = act_;
  } else {
    k::gemm(false, false, n, I, C, 1.0f, ln_, C, L.up_w, I, 0.0f, mlp_, I);
    add_bias(mlp_, L.up_b, n, I);
    k::gelu_forward(mlp_, mlp_, static_cast<std::size_t>(n) * I);
  }
  k::gemm(false, false, n, C, I, 1.0f, h, I, L.down_w, C, 1.0f, x_, C);
  add_bias(x_, L.down_b, n, C);
}

void lm_runner::forward(std::span<const lm_chunk> chunks, kv_storage& kv) {
  const lm_config& c = w_.cfg;
  const int C = c.hidden, V = c.vocab_size;
  int n = 0, n_logits = 0;
  for (const lm_chunk& ch : chunks) {
    if (ch.len < 1 || ch.start < 0 || ch.start + ch.len > c.max_positions)
      fail("lm: chunk at positions [{}, {}) is outside the context of {}", ch.start,
           ch.start + ch.len, c.max_positions);
    n += ch.len;
    n_logits += ch.logits ? 1 : 0;
  }
  if (n > max_rows_ || n_logits > max_logits_)
    fail("lm: batch of {} rows / {} logits exceeds the planned {} / {}", n, n_logits, max_rows_,
         max_logits_);
  if (n == 0) return;
  // Embeddings: x[r] = tok_emb[id] (+ pos_emb[pos] for GPT-2).
  int row = 0;
  for (const lm_chunk& ch : chunks) {
    for (int i = 0; i < ch.len; ++i, ++row) {
      const int id = ch.tokens[i], p = ch.start + i;
      if (id < 0 || id >= V) fail("lm: token id {} outside the vocabulary of {}", id, V);
      pos_[static_cast<std::size_t>(row)] = p;
      float* xr = x_ + static_cast<std::size_t>(row) * C;
      std::memcpy(xr, w_.tok_emb + static_cast<std::size_t>(id) * C, C * sizeof(float));
      if (w_.pos_emb) k::accumulate(xr, w_.pos_emb + static_cast<std::size_t>(p) * C, C);
    }
  }
  for (int l = 0; l < c.n_layer; ++l) {
    attention_layer(l, chunks, kv, n);
    mlp_layer(w_.layers[static_cast<std::size_t>(l)], n);
  }
  // Head on the sampled rows only: logits[j] = normf(x[last row of chunk j]) @ head^T.
  row = 0;
  int j = 0;
  for (const lm_chunk& ch : chunks) {
    row += ch.len;
    if (!ch.logits) continue;
    std::memcpy(ln_ + static_cast<std::size_t>(j++) * C, x_ + static_cast<std::size_t>(row - 1) * C,
                C * sizeof(float));
  }
  if (n_logits == 0) return;
  norm(ln_, w_.normf_w, w_.normf_b, lnf_, n_logits);
  k::gemm(false, true, n_logits, V, C, 1.0f, lnf_, C, w_.head, C, 0.0f, logits_, V);
}

lm_weights gpt2_lm_weights(const model_config& m, const float* flat, const std::string& name) {
  const param_layout layout = gpt2_layout(m);
  lm_weights w;
  lm_config& c = w.cfg;
  c.arch = lm_arch::gpt2;
  c.name = name;
  c.vocab_size = m.vocab_size;
  c.hidden = m.n_embd;
  c.n_layer = m.n_layer;
  c.n_head = c.n_kv_head = m.n_head;
  c.head_dim = m.n_embd / m.n_head;
  c.intermediate = 4 * m.n_embd;
  c.max_positions = m.n_positions;
  c.norm_eps = 1e-5f;
  c.tied_head = true;
  c.eos_id = m.vocab_size > 50256 ? 50256 : -1;
  w.store.resize(layout.total);
  std::memcpy(w.store.data(), flat, layout.total * sizeof(float));
  auto at = [&](const std::string& n) -> const float* {
    return w.store.data() + layout.find(n)->offset;
  };
  w.tok_emb = at("wte.weight");
  w.pos_emb = at("wpe.weight");
  w.head = w.tok_emb;
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    w.layers.push_back({.norm1_w = at(h + "ln_1.weight"),
                        .norm1_b = at(h + "ln_1.bias"),
                        .qkv_w = at(h + "attn.c_attn.weight"),
                        .qkv_b = at(h + "attn.c_attn.bias"),
                        .o_w = at(h + "attn.c_proj.weight"),
                        .o_b = at(h + "attn.c_proj.bias"),
                        .norm2_w = at(h + "ln_2.weight"),
                        .norm2_b = at(h + "ln_2.bias"),
                        .up_w = at(h + "mlp.c_fc.weight"),
                        .up_b = at(h + "mlp.c_fc.bias"),
                        .down_w = at(h + "mlp.c_proj.weight"),
                        .down_b = at(h + "mlp.c_proj.bias")});
  }
  w.normf_w = at("ln_f.weight");
  w.normf_b = at("ln_f.bias");
  return w;
}

}  // namespace zf
