#pragma once
// Paged attention (vLLM-style block tables) for the serving forward: causal attention of a chunk
// of tq query rows of one sequence, at absolute positions start .. start+tq-1, over the
// sequence's cached keys/values 0 .. start+tq-1, which live in fixed-size blocks of a pool.
// Grouped-query attention: query head h reads kv head h / (n_head / n_kv_head).
// Two paths with one contract: few query rows (decodes) read K/V straight from the blocks
// with vectorised dots; longer chunks gather the context once and run per-head GEMMs
// (attention_forward). The K/V of the chunk's own rows must already be in the blocks.
#include <cstdint>

#include "kernels/attention.hpp"

namespace zf::kernels {

// Chunks of at most this many query rows take the direct path (no GEMMs, no OpenBLAS threads:
// callers may run several such chunks in parallel).
inline constexpr int paged_direct_rows = 4;

// K/V pools hold fp32 rows (k, v) or bf16 rows (k16, v16 set instead: `engine.kv_dtype`). bf16
// rows are widened exactly and then take the fp32 path's operations in the same order, so
// attention over bf16 K/V gives the bits of fp32 attention over the bf16-rounded K/V.
struct paged_kv {
  const float* k = nullptr;            // layer's K pool: [num_blocks][block_size][kv_dim]
  const float* v = nullptr;            // layer's V pool, same layout
  const std::uint16_t* k16 = nullptr;  // bf16 K pool (k, v unused when set), same layout
  const std::uint16_t* v16 = nullptr;  // bf16 V pool
  const int* blocks = nullptr;         // the sequence's block table, covering start + tq slots
  int block_size = 0;
  int kv_dim = 0;  // n_kv_head * head_dim
};

struct paged_shape {
  int tq = 0, start = 0;
  int n_head = 0, n_kv_head = 0, head_dim = 0;
  int ldq = 0, ldo = 0;  // row strides of q and out
  // Query heads [head_begin, head_end) only (head_end 0: all heads); the other heads' output
  // columns are left as they are. Whole kv-head groups (multiples of n_head / n_kv_head), so
  // that one batch-1 decode row can be split over threads: each head's operations and bits are
  // the same whatever the range.
  int head_begin = 0, head_end = 0;
};

// Floats of scratch paged_attention needs for this shape.
long paged_attention_scratch(const paged_shape& s);

// q: [tq, ldq] (head h at columns h*head_dim) -> out: [tq, ldo] (the n_head*head_dim columns
// overwritten). Scale 1/sqrt(head_dim). scratch: paged_attention_scratch(s) floats.
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch);

// K/V rows of n tokens into one layer's pools: row r's K (k_src + r * ld, kv_dim floats) and V
// (v_src + r * ld) go to slot slot[r] (block * block_size + row within the block) of k and v, or,
// with k16 / v16 set instead, of the bf16 pools rounded to nearest even (kv_storage::write's
// bits). The serving forward writes a batch's K/V with one call per layer.
void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
long paged_attention_scratch(const paged_shape& s);
// direct_only: every query row by the direct kernel, whatever tq (batch-invariant mode).
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch, bool direct_only = false);
// attention_forward (kernels/attention.hpp) with each query row computed alone by the same
// direct kernel as paged_attention's: bit-identical to a paged decode of that row. att is filled
// as attention_forward fills it (probabilities, masked entries 0) for a backward that follows.
void attention_forward_rows(const attention_shape& s, const float* q, const float* k,
                            const float* v, float* out, float* att);
void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16);
}  // namespace cpu
// kernels/paged_attention_cuda.cu: q, out, the pools, the block table and scratch in GPU memory,
// queued on the current stream (nothing waits). Every row takes the same kernel whatever tq, so
// direct_only changes nothing. Its scratch (split partials) is sized by its own
// paged_attention_scratch.
namespace cuda {
long paged_attention_scratch(const paged_shape& s);
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch, bool direct_only = false);
void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16);
}  // namespace cuda
// paged_attention_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp; tests).
namespace cuda_sim {
long paged_attention_scratch(const paged_shape& s);
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch, bool direct_only = false);
void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16);
}  // namespace cuda_sim

}  // namespace zf::kernels
