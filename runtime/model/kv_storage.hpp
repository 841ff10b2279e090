#pragma once
// The paged KV memory the model's paged mode (runtime/lm) reads and writes; which sequence owns
// which block is the serving side's business (runtime/serve/kv_cache: the block pool and prefix
// cache).
#include <cstddef>

#include "runtime/core/tensor.hpp"

namespace zf {

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
