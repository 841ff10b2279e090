#pragma once
// The model's paged mode (its train and score modes are runtime/model/model.hpp): one ragged batch
// of chunks (prefill pieces of any length and single-token decodes of different sequences) in one
// pass over the weights, with K/V in the paged pool. Every matrix multiply runs over all the
// batch's rows at once (that is what makes SplitFuse pay: a decode row rides along a prefill
// chunk's GEMM); attention runs per chunk over the chunk's own sequence (paged_attention). The
// block math is runtime/model/block's, shared with the train and score modes; only attention
// (paged_attention over the KV pool) and the ragged row bookkeeping are this mode's own.
// Allocation: all scratch is sized at construction for max_rows tokens and max_logits sampled rows;
// forward() allocates nothing.
// Device: built for device::cuda (weights and KV pool then in GPU memory too), the scratch lives
// there and every kernel runs there; the chunks' ids, positions, K/V slots and block tables go up
// in one copy per forward, the sampled rows' logits come back in one (logits() is host memory on
// both devices). Each chunk's attention is one launch; MoE, quantized weights and batch-invariant
// mode are refused on cuda for now.
#include <span>
#include <vector>

#include "kernels/dispatch.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/core/worker_pool.hpp"
#include "runtime/model/kv_storage.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/model/moe.hpp"

namespace zf {

struct lm_chunk {
  const int* tokens = nullptr;  // [len] ids at positions start .. start+len-1
  int start = 0, len = 0;
  const int* blocks = nullptr;  // the sequence's block table, covering start + len slots
  bool logits = false;          // produce the logits of the chunk's last row
};

class paged_model {
 public:
  // max_rows: tokens per forward at most (>= 1, <= ... any); max_logits: chunks with logits at
  // most. Both are hard limits checked by forward().
  // threads: for the per-chunk attention of decode rows (GEMMs use OpenBLAS's own threads) and,
  // in batch-invariant mode, for every row's attention and the invariant GEMM's columns.
  paged_model(const lm_weights& w, int max_rows, int max_logits, int threads = 1,
              device where = device::cpu);
  device where() const { return where_; }
  const model_spec& config() const { return w_.cfg; }

  // Computes the chunks: their K/V are written into kv at their positions (slot p of a chunk's
  // sequence in block blocks[p / block_size], row p % block_size), then attention reads
  // positions 0 .. start+len-1. Logits of the chunks with logits = true, in chunk order, land
  // in logits(0), logits(1), ... : [vocab] each. Throws zf::error for a token id outside the
  // vocabulary, a position beyond max_positions, or more rows/logits than planned.
  void forward(std::span<const lm_chunk> chunks, kv_storage& kv);
  const float* logits(int i) const {
    return logits_out_ + static_cast<std::size_t>(i) * w_.cfg.vocab_size;
  }

  int max_rows() const { return max_rows_; }
  std::size_t scratch_bytes() const { return scratch_.bytes(); }

 private:
  void attention_layer(int l, std::span<const lm_chunk> chunks, kv_storage& kv, int rows);
  // cuda: the chunks' ids, positions, K/V slots and block tables copied up (io_), and the
  // embeddings computed from them; cpu: the embeddings from the host ids.
  void embed(std::span<const lm_chunk> chunks, int block_size);
  void write_kv(int l, std::span<const lm_chunk> chunks, kv_storage& kv);
  void mlp_layer(int l, int rows);

  const lm_weights& w_;
  device where_;
  int max_rows_, max_logits_;
  arena scratch_;
  // MoE layers (dropless: a token's experts never depend on the rest of the batch, which keeps
  // batching invariance): one routing state for max_rows, reused by every layer.
  moe::layer_state moe_st_;
  moe::scratch moe_sc_;
  model_spec expert_spec_;
  float *x_ = nullptr, *ln_ = nullptr, *qkv_ = nullptr, *att_ = nullptr, *mlp_ = nullptr,
        *act_ = nullptr, *attn_scratch_ = nullptr, *lnf_ = nullptr, *logits_ = nullptr,
        *rope_cos_ = nullptr, *rope_sin_ = nullptr;
  std::vector<int> pos_;  // [max_rows] position of each row
  // cuda: ids | positions | slots [max_rows] each, then the block tables (table_at_[c] is chunk
  // c's), in GPU memory (io_) after being packed on the host (io_host_).
  fbuffer io_;
  std::vector<int> io_host_, table_at_;
  const int *ids_dev_ = nullptr, *pos_dev_ = nullptr, *slot_dev_ = nullptr;
  std::vector<float> logits_host_;
  const float* logits_out_ = nullptr;  // logits_ (cpu) or logits_host_ (cuda)
  worker_pool pool_;
  float* decode_scratch_ = nullptr;  // [threads][n_head * max_positions]
  std::size_t decode_scratch_stride_ = 0;
  std::vector<int> row0_;  // first row of each chunk (reused)
  struct piece {           // rows [off, off + len) of chunk `chunk`, query heads [h0, h1)
    int chunk, off, len, h0, h1;
  };
  std::vector<piece> pieces_;   // (reused)
  kernels::kernel_pool kpool_;  // pool_ lent to the kernels
};

}  // namespace zf
