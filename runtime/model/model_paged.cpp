// Ragged serving forward (see lm.hpp). Rows of the batch are the chunks' tokens back to back:
// chunk c owns rows [row0_c, row0_c + len_c). Shapes below: n = rows in this forward,
// C = hidden, Q = q_dim, KV = kv_dim, D = qkv_dim = Q + 2 KV, I = intermediate.
#include "runtime/model/model_paged.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/device.hpp"
#include "kernels/embedding.hpp"
#include "kernels/matmul.hpp"
#include "kernels/paged_attention.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/block.hpp"

namespace zf {
namespace k = kernels;

paged_model::paged_model(const lm_weights& w, int max_rows, int max_logits, int threads,
                         device where)
    : w_(w),
      where_(where),
      max_rows_(max_rows),
      max_logits_(max_logits),
      pool_(where == device::cuda ? 1 : std::max(1, threads)) {
  const k::device_scope on(where_);  // cuda: refused without a GPU (unless simulated)
  const model_spec& c = w.cfg;
  if (max_rows < 1 || max_logits < 1) fail("paged_model: max_rows and max_logits must be >= 1");
  if (where_ == device::cuda) {
    if (c.moe.any() || w.quant)
      fail("paged_model: MoE and quantized models do not run on the cuda device yet");
    if (w.store.where() != device::cuda)
      fail("paged_model: the cuda device needs the weights in GPU memory (copy_lm_weights)");
    scratch_ = arena(where_);
    io_ = fbuffer(where_);
  }
  const bool llama = c.arch == model_arch::llama;
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
      rope_cos_ = scratch_.take(block::rope_table_floats(c));
      rope_sin_ = scratch_.take(block::rope_table_floats(c));
    }
    if (c.moe.any()) {
      moe::lay_out(scratch_, c, c.moe.max_experts(), max_rows, moe_st_);
      moe::lay_out(scratch_, c, max_rows, false, moe_sc_);
    }
    if (pass == 0) scratch_.reserve();
  }
  block::fill_rope_table(c, rope_cos_, rope_sin_, where_);
  logits_out_ = logits_;
  if (where_ == device::cuda) {  // logits() is host memory on both devices
    logits_host_.resize(L * c.vocab_size);
    logits_out_ = logits_host_.data();
  }
  if (c.moe.any()) expert_spec_ = moe::expert_spec(c);
  pos_.resize(R);
  pieces_.reserve(R);
  kpool_.threads = pool_.size();
  kpool_.run = [this](int n, const std::function<void(int)>& fn) {
    pool_.run(n, [&](int, int i) { fn(i); });
  };
}

// qkv = norm1(x) @ qkv_w; rope; K/V into the pool; attention per chunk; x += att @ o_w.
void paged_model::attention_layer(int l, std::span<const lm_chunk> chunks, kv_storage& kv, int n) {
  const model_spec& c = w_.cfg;
  const lm_layer& L = w_.layers[static_cast<std::size_t>(l)];
  const int Q = c.q_dim(), KV = c.kv_dim(), D = c.qkv_dim(), bs = kv.block_size();
  block::norm_forward(c, x_, L.norm1_w, L.norm1_b, ln_, nullptr, nullptr, n);
  const bool gpu = where_ == device::cuda;
  block::qkv_forward(c, L, ln_, qkv_, gpu ? pos_dev_ : pos_.data(), {rope_cos_, rope_sin_}, n);
  write_kv(l, chunks, kv);  // K/V of every row into the pool first: chunks then only read
  // rows [off, off + len) of chunk ci, query heads [h0, h1) (0, 0: all)
  auto attend = [&](const piece& pc, float* scratch) {
    const lm_chunk& ch = chunks[static_cast<std::size_t>(pc.chunk)];
    const int r0 = row0_[static_cast<std::size_t>(pc.chunk)] + pc.off;
    k::paged_shape s{.tq = pc.len,
                     .start = ch.start + pc.off,
                     .n_head = c.n_head,
                     .n_kv_head = c.n_kv_head,
                     .head_dim = c.head_dim,
                     .ldq = D,
                     .ldo = Q,
                     .head_begin = pc.h0,
                     .head_end = pc.h1};
    const int* table = gpu ? ids_dev_ + table_at_[static_cast<std::size_t>(pc.chunk)] : ch.blocks;
    k::paged_kv pk{.blocks = table, .block_size = bs, .kv_dim = KV};
    if (kv.dtype() == kv_dtype::bf16) {
      pk.k16 = kv.k16(l, 0);
      pk.v16 = kv.v16(l, 0);
    } else {
      pk.k = kv.k(l, 0);
      pk.v = kv.v(l, 0);
    }
    k::paged_attention(s, qkv_ + static_cast<std::size_t>(r0) * D, pk,
                       att_ + static_cast<std::size_t>(r0) * Q, scratch);
  };
  // Prefill chunks one at a time (their GEMMs are threaded by OpenBLAS) unless every row must
  // be computed alone (batch-invariant mode: the direct kernel, so pieces of a few rows give the
  // same bits as the whole chunk). The rest spread over the worker pool in pieces of at most
  // paged_direct_rows rows, each thread with its own scratch; with fewer pieces than threads
  // (batch-1 decode) each piece's heads are split too (whole kv-head groups: same bits).
  if (gpu) {  // one launch per chunk, queued in order on the stream
    for (std::size_t ci = 0; ci < chunks.size(); ++ci)
      attend({static_cast<int>(ci), 0, chunks[ci].len, 0, 0}, attn_scratch_);
    return block::attn_out_forward(c, L, att_, Q, x_, x_, n);
  }
  const bool invariant = k::batch_invariant();
  pieces_.clear();
  for (std::size_t ci = 0; ci < chunks.size(); ++ci) {
    const int len = chunks[ci].len;
    if (len > k::paged_direct_rows && !invariant) {
      attend({static_cast<int>(ci), 0, len, 0, 0}, attn_scratch_);
      continue;
    }
    for (int off = 0; off < len; off += k::paged_direct_rows)
      pieces_.push_back(
          {static_cast<int>(ci), off, std::min(k::paged_direct_rows, len - off), 0, 0});
  }
  const int want = 2 * pool_.size(), n_rows = static_cast<int>(pieces_.size());
  if (n_rows > 0 && n_rows < want && pool_.size() > 1) {
    const int group = c.n_head / c.n_kv_head;
    const int split = std::min(c.n_kv_head, (want + n_rows - 1) / n_rows);
    for (int r = 0; r < n_rows; ++r)
      for (int g = 0; g < split; ++g) {
        piece p = pieces_[static_cast<std::size_t>(r)];
        p.h0 = c.n_kv_head * g / split * group;
        p.h1 = c.n_kv_head * (g + 1) / split * group;
        pieces_.push_back(p);
      }
    pieces_.erase(pieces_.begin(), pieces_.begin() + n_rows);
  }
  pool_.run(static_cast<int>(pieces_.size()), [&](int worker, int j) {
    attend(pieces_[static_cast<std::size_t>(j)],
           decode_scratch_ + decode_scratch_stride_ * static_cast<std::size_t>(worker));
  });
  block::attn_out_forward(c, L, att_, Q, x_, x_, n);
}

// x += act(norm2(x) @ up_w) @ down_w, or the MoE MLP (with PR-MoE's dense one beside it).
void paged_model::mlp_layer(int l, int n) {
  const model_spec& c = w_.cfg;
  const lm_layer& L = w_.layers[static_cast<std::size_t>(l)];
  block::norm_forward(c, x_, L.norm2_w, L.norm2_b, ln_, nullptr, nullptr, n);
  if (c.dense_mlp(l)) block::mlp_forward(c, L, ln_, mlp_, act_, x_, x_, n);
  if (c.moe.experts_of(l))
    moe::forward(c, expert_spec_, L, ln_, n, -1, moe_st_, moe_sc_, x_, false);
}

void paged_model::forward(std::span<const lm_chunk> chunks, kv_storage& kv) {
  const model_spec& c = w_.cfg;
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
  const k::device_scope on(where_);
  if (where_ == device::cuda && k::batch_invariant())
    fail("lm: batch-invariant mode does not run on the cuda device yet");
  const k::kernel_pool_scope lend(&kpool_);  // the invariant GEMM's threads (dispatch.hpp)
  embed(chunks, kv.block_size());
  for (int l = 0; l < c.n_layer; ++l) {
    attention_layer(l, chunks, kv, n);
    mlp_layer(l, n);
  }
  // Head on the sampled rows only: logits[j] = normf(x[last row of chunk j]) @ head^T.
  int row = 0, j = 0;
  for (const lm_chunk& ch : chunks) {
    row += ch.len;
    if (!ch.logits) continue;
    k::copy(ln_ + static_cast<std::size_t>(j++) * C, x_ + static_cast<std::size_t>(row - 1) * C,
            static_cast<std::size_t>(C));
  }
  if (n_logits == 0) return;
  block::norm_forward(c, ln_, w_.normf_w, w_.normf_b, lnf_, nullptr, nullptr, n_logits);
  if (w_.quant && w_.quant->head)
    w_.quant->head->forward(lnf_, C, n_logits, nullptr, logits_, V, false);
  else
    k::gemm(false, true, n_logits, V, C, 1.0f, lnf_, C, w_.head, C, 0.0f, logits_, V);
  if (where_ == device::cuda) {  // the sampled rows to the host: the forward's one wait
    k::gpu_copy(logits_host_.data(), logits_,
                static_cast<std::size_t>(n_logits) * V * sizeof(float));
    k::gpu_synchronize();
  }
}

// Embeddings: x[r] = tok_emb[id] (+ pos_emb[pos] for GPT-2), ids checked on the host.
void paged_model::embed(std::span<const lm_chunk> chunks, int bs) {
  const int C = w_.cfg.hidden, V = w_.cfg.vocab_size;
  int row = 0;
  if (where_ == device::cpu) {
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
    return;
  }
  // cuda: ids | positions | K/V slots [max_rows] each, then the chunks' block tables, packed on
  // the host and copied up at once (pageable memory: staged before gpu_copy returns).
  const std::size_t R = static_cast<std::size_t>(max_rows_);
  io_host_.assign(3 * R, 0);
  for (const lm_chunk& ch : chunks) {
    for (int i = 0; i < ch.len; ++i, ++row) {
      const int id = ch.tokens[i], p = ch.start + i;
      if (id < 0 || id >= V) fail("lm: token id {} outside the vocabulary of {}", id, V);
      const std::size_t r = static_cast<std::size_t>(row);
      io_host_[r] = id;
      io_host_[R + r] = p;
      io_host_[2 * R + r] = ch.blocks[p / bs] * bs + p % bs;
    }
  }
  table_at_.clear();
  for (const lm_chunk& ch : chunks) {
    table_at_.push_back(static_cast<int>(io_host_.size()));
    io_host_.insert(io_host_.end(), ch.blocks, ch.blocks + (ch.start + ch.len + bs - 1) / bs);
  }
  if (io_.size() < io_host_.size()) io_.resize(2 * io_host_.size());  // grows rarely
  int* io = reinterpret_cast<int*>(io_.data());
  k::gpu_copy(io, io_host_.data(), io_host_.size() * sizeof(int));
  ids_dev_ = io;
  pos_dev_ = io + R;
  slot_dev_ = io + 2 * R;
  row = 0;
  for (const lm_chunk& ch : chunks) {
    k::embedding_forward(ids_dev_ + row, w_.tok_emb, w_.pos_emb,
                         x_ + static_cast<std::size_t>(row) * C, 1, ch.len, C, ch.start);
    row += ch.len;
  }
}

// K/V of every row of layer l into the pool (row0_: each chunk's first row).
void paged_model::write_kv(int l, std::span<const lm_chunk> chunks, kv_storage& kv) {
  const model_spec& c = w_.cfg;
  const int Q = c.q_dim(), KV = c.kv_dim(), D = c.qkv_dim(), bs = kv.block_size();
  int row = 0;
  row0_.clear();
  for (const lm_chunk& ch : chunks) {
    row0_.push_back(row);
    row += ch.len;
  }
  if (where_ == device::cuda) {  // one launch for every row, slots from embed()
    const bool bf = kv.dtype() == kv_dtype::bf16;
    k::paged_kv_write(qkv_ + Q, qkv_ + Q + KV, D, row, slot_dev_, KV, bf ? nullptr : kv.k(l, 0),
                      bf ? nullptr : kv.v(l, 0), bf ? kv.k16(l, 0) : nullptr,
                      bf ? kv.v16(l, 0) : nullptr);
    return;
  }
  row = 0;
  for (const lm_chunk& ch : chunks) {
    for (int i = 0; i < ch.len; ++i) {
      const int p = ch.start + i, b = ch.blocks[p / bs];
      const float* src = qkv_ + static_cast<std::size_t>(row + i) * D;
      kv.write(l, b, p % bs, src + Q, src + Q + KV);
    }
    row += ch.len;
  }
}

}  // namespace zf
