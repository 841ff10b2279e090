#pragma once
// Paged KV cache (vLLM/FastGen style): a pool of fixed-size blocks of block_size token slots.
// block_pool is the bookkeeping (ids, reference counts, a free list) that the scheduler uses
// without any model; kv_storage is the memory the model reads and writes.
// Block ids are 0 .. num_blocks-1. A block with refcount > 1 is shared (forked choices share
// their prompt's full blocks) and must not be written.
#include <cstddef>
#include <vector>

#include "runtime/tensor.hpp"

namespace zf {

class block_pool {
 public:
  explicit block_pool(int num_blocks);
  int num_blocks() const;
  int num_free() const;
  int num_used() const { return num_blocks() - num_free(); }
  // One block with refcount 1, or -1 when none is free.
  int allocate();
  // n blocks appended to out, all or nothing; false (out untouched) when fewer than n are free.
  bool allocate(int n, std::vector<int>& out);
  void retain(int block);   // refcount + 1; zf::error if the block is free or out of range
  void release(int block);  // refcount - 1; back on the free list at 0; zf::error if already free
  int refcount(int block) const;

 private:
  std::vector<int> ref_;
  std::vector<int> free_;  // LIFO: a just-freed (cache-warm) block is reused first
};

// K and V memory: [n_layer][num_blocks][block_size][kv_dim] each, fp32, allocated once.
// Token slot s of a sequence lives in block table[s / block_size] at row s % block_size.
class kv_storage {
 public:
  kv_storage(int n_layer, int num_blocks, int block_size, int kv_dim);
  float* k(int layer, int block) { return k_.data() + offset(layer, block); }
  float* v(int layer, int block) { return v_.data() + offset(layer, block); }
  const float* k(int layer, int block) const { return k_.data() + offset(layer, block); }
  const float* v(int layer, int block) const { return v_.data() + offset(layer, block); }
  // Copies the first `rows` token slots of block src into dst, in every layer (copy-on-write
  // of a partially filled block shared by forked sequences).
  void copy_block(int src, int dst, int rows);
  int block_size() const { return block_size_; }
  int kv_dim() const { return kv_dim_; }
  int num_blocks() const { return num_blocks_; }
  std::size_t bytes() const { return 2 * k_.size() * sizeof(float); }

 private:
  std::size_t offset(int layer, int block) const {
    return (static_cast<std::size_t>(layer) * num_blocks_ + block) * block_size_ * kv_dim_;
  }
  int n_layer_, num_blocks_, block_size_, kv_dim_;
  fbuffer k_, v_;
};

}  // namespace zf
