#include "runtime/model/kv_storage.hpp"

#include <cstring>

#include "runtime/core/error.hpp"

namespace zf {

kv_storage::kv_storage(int n_layer, int num_blocks, int block_size, int kv_dim)
    : n_layer_(n_layer), num_blocks_(num_blocks), block_size_(block_size), kv_dim_(kv_dim) {
  if (n_layer < 1 || num_blocks < 1 || block_size < 1 || kv_dim < 1)
    fail("kv storage: n_layer {}, num_blocks {}, block_size {}, kv_dim {} must all be >= 1",
         n_layer, num_blocks, block_size, kv_dim);
  std::size_t n = static_cast<std::size_t>(n_layer) * num_blocks * block_size * kv_dim;
  k_.resize(n);
  v_.resize(n);
}

void kv_storage::copy_block(int src, int dst, int rows) {
  if (src < 0 || src >= num_blocks_ || dst < 0 || dst >= num_blocks_)
    fail("kv storage: copy_block {} -> {} out of range [0, {})", src, dst, num_blocks_);
  if (rows < 0 || rows > block_size_)
    fail("kv storage: copy_block of {} rows, block size is {}", rows, block_size_);
  if (src == dst || rows == 0) return;
  std::size_t n = static_cast<std::size_t>(rows) * kv_dim_;
  for (int l = 0; l < n_layer_; ++l) {
    std::memcpy(k(l, dst), k(l, src), n * sizeof(float));
    std::memcpy(v(l, dst), v(l, src), n * sizeof(float));
  }
}

}  // namespace zf
