// Paged KV cache: block bookkeeping (block_pool) and the K/V memory itself (kv_storage).
#include "runtime/serve/kv_cache.hpp"

#include <algorithm>
#include <cstring>

#include "runtime/core/error.hpp"

namespace zf {

block_pool::block_pool(int num_blocks, int cache_block_size) : bs_(cache_block_size) {
  if (num_blocks < 1) fail("kv block pool: num_blocks must be >= 1, got {}", num_blocks);
  if (cache_block_size < 0)
    fail("kv block pool: cache_block_size must be >= 0, got {}", cache_block_size);
  ref_.assign(num_blocks, 0);
  free_.reserve(num_blocks);
  // Reversed so that a fresh pool hands out 0, 1, 2, ... (pop_back takes the last).
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  if (caching()) {
    key_.assign(num_blocks, 0);
    gen_.assign(num_blocks, 0);
    parent_.assign(num_blocks, -1);
    parent_gen_.assign(num_blocks, 0);
    tokens_.assign(static_cast<std::size_t>(num_blocks) * bs_, 0);
    std::size_t cap = 2;
    while (cap < 2 * static_cast<std::size_t>(num_blocks)) cap *= 2;
    slots_.assign(cap, -1);
    prev_.assign(num_blocks, -1);
    next_.assign(num_blocks, -1);
  }
}

int block_pool::num_blocks() const {
  return static_cast<int>(ref_.size());
}
int block_pool::num_free() const {
  return static_cast<int>(free_.size()) + n_evictable_;
}

int block_pool::allocate() {
  int b = -1;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (head_ >= 0) {  // evict the least recently released published block
    b = head_;
    unlink(b);
    unpublish(b);
  } else {
    return -1;
  }
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
  if (--ref_[block] > 0) return;
  if (!caching() || key_[block] == 0) {
    free_.push_back(block);
    return;
  }
  prev_[block] = tail_;  // most recently released: evicted last
  next_[block] = -1;
  if (tail_ >= 0) next_[tail_] = block;
  tail_ = block;
  if (head_ < 0) head_ = block;
  ++n_evictable_;
}

int block_pool::refcount(int block) const {
  if (block < 0 || block >= num_blocks())
    fail("kv block pool: refcount of block {} out of range [0, {})", block, num_blocks());
  return ref_[block];
}

// FNV-1a over the parent's identity and the tokens, finished with a 64-bit mixer.
uint64_t block_pool::key_of(int parent, std::span<const int> tokens) const {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  mix(static_cast<uint64_t>(static_cast<int64_t>(parent)));
  mix(parent >= 0 ? gen_[parent] : 0);
  for (int t : tokens) mix(static_cast<uint32_t>(t));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h == 0 ? 1 : h;
}

int block_pool::lookup(int parent, std::span<const int> tokens) const {
  if (!caching() || static_cast<int>(tokens.size()) != bs_) return -1;
  if (parent >= num_blocks()) fail("kv block pool: lookup after block {} out of range", parent);
  const uint64_t k = key_of(parent, tokens);
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = home(k);; i = (i + 1) & mask) {
    const int b = slots_[i];
    if (b < 0) return -1;
    if (key_[b] != k || parent_[b] != parent || (parent >= 0 && parent_gen_[b] != gen_[parent]))
      continue;
    if (std::equal(tokens.begin(), tokens.end(), tokens_.begin() + static_cast<long>(b) * bs_))
      return b;
  }
}

void block_pool::acquire(int block) {
  if (block < 0 || block >= num_blocks() || !caching() || key_[block] == 0)
    fail("kv block pool: acquire of block {}, which is not published", block);
  if (ref_[block] == 0) unlink(block);
  ++ref_[block];
}

bool block_pool::publish(int block, int parent, std::span<const int> tokens) {
  if (!caching()) return false;
  if (block < 0 || block >= num_blocks() || ref_[block] == 0)
    fail("kv block pool: publish of block {}, which is not in use", block);
  if (static_cast<int>(tokens.size()) != bs_)
    fail("kv block pool: publish of {} tokens, block size is {}", tokens.size(), bs_);
  if (key_[block] != 0) return false;  // already published (shared by a fork)
  if (lookup(parent, tokens) >= 0) return false;
  const uint64_t k = key_of(parent, tokens);
  key_[block] = k;
  parent_[block] = parent;
  parent_gen_[block] = parent >= 0 ? gen_[parent] : 0;
  std::copy(tokens.begin(), tokens.end(), tokens_.begin() + static_cast<long>(block) * bs_);
  std::size_t i = home(k);
  while (slots_[i] >= 0) i = (i + 1) & (slots_.size() - 1);  // never full: 2 x num_blocks slots
  slots_[i] = block;
  ++n_cached_;
  return true;
}

int block_pool::clear_cache() {
  const int n = n_cached_;
  for (int b = 0; n_cached_ > 0 && b < num_blocks(); ++b) {
    if (key_[b] == 0) continue;
    if (ref_[b] == 0) {
      unlink(b);
      free_.push_back(b);
    }
    unpublish(b);
  }
  return n;
}

void block_pool::unlink(int b) {
  if (prev_[b] >= 0)
    next_[prev_[b]] = next_[b];
  else
    head_ = next_[b];
  if (next_[b] >= 0)
    prev_[next_[b]] = prev_[b];
  else
    tail_ = prev_[b];
  prev_[b] = next_[b] = -1;
  --n_evictable_;
}

// Forgets b's content; its generation moves on so children published under it never match.
void block_pool::unpublish(int b) {
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = home(key_[b]);
  while (slots_[i] != b) i = (i + 1) & mask;
  // Backward-shift deletion: pull later entries of the run into the hole while their home slot
  // does not lie cyclically in (hole, j], so every entry stays reachable from its home.
  for (std::size_t j = (i + 1) & mask; slots_[j] >= 0; j = (j + 1) & mask) {
    const std::size_t h = home(key_[slots_[j]]);
    const bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
    if (!stays) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = -1;
  --n_cached_;
  key_[b] = 0;
  ++gen_[b];
}

}  // namespace zf
