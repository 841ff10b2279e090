// Paged KV cache: block bookkeeping (block_pool) and the K/V memory itself (kv_storage).
#include "runtime/kv_cache.hpp"

#include <cstring>

#include "runtime/error.hpp"

namespace zf {

block_pool::block_pool(int num_blocks) {
  if (num_blocks < 1) fail("kv block pool: num_blocks must be >= 1, got {}", num_blocks);
  ref_.assign(num_blocks, 0);
  free_.reserve(num_blocks);
  // Reversed so that a fresh pool hands out 0, 1, 2, ... (pop_back takes the last).
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int block_pool::num_blocks() const {
  return static_cast<int>(ref_.size());
}
int block_pool::num_free() const {
  return static_cast<int>(free_.size());
}

int block_pool::allocate() {
  if (free_.empty()) return -1;
  int b = free_.back();
  free_.pop_back();
  ref_[b] = 1;
  return b;
}

bool block_pool::allocate(int n, std::vector<int>& out) {
  if (n < 0) fail("kv block pool: cannot allocate {} blocks", n);
  if (n > num_free()) return false;
  for (int i = 0; i < n; ++i) out.push_back(allocate());
  return true;
}

void block_pool::retain(int block) {
  if (block < 0 || block >= num_blocks())
    fail("kv block pool: retain of block {} out of range [0, {})", block, num_blocks());
  if (ref_[block] == 0) fail("kv block pool: retain of free block {}", block);
  ++ref_[block];
}

void block_pool::release(int block) {
  if (block < 0 || block >= num_blocks())
    fail("kv block pool: release of block {} out of range [0, {})", block, num_blocks());
  if (ref_[block] == 0) fail("kv block pool: double free of block {}", block);
  if (--ref_[block] == 0) free_.push_back(block);
}

int block_pool::refcount(int block) const {
  if (block < 0 || block >= num_blocks())
    fail("kv block pool: refcount of block {} out of range [0, {})", block, num_blocks());
  return ref_[block];
}

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
