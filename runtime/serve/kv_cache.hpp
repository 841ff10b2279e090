#pragma once
// Paged KV cache (vLLM/FastGen style): a pool of fixed-size blocks of block_size token slots.
// block_pool is the bookkeeping (ids, reference counts, a free list) that the scheduler uses
// without any model; kv_storage is the memory the model reads and writes.
// Block ids are 0 .. num_blocks-1. A block with refcount > 1 is shared (forked choices share
// their prompt's full blocks) and must not be written.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/core/tensor.hpp"
#include "runtime/model/kv_storage.hpp"

namespace zf {

// Prefix caching (vLLM's automatic prefix caching): with cache_block_size > 0 a full block whose
// tokens are known can be published under its content, i.e. its tokens and its parent (the
// block before it in the sequence). A later sequence whose prompt starts with the same tokens
// finds the chain block by block (lookup) and shares those blocks instead of computing them.
// Matching is exact: a block matches only when its tokens are equal and its parent is the very
// block matched just before, in the same generation (a block's generation moves on whenever it
// is reused, which invalidates every child published under it); the 64-bit hash only indexes.
// A published block whose refcount drops to 0 is not freed but evictable: it still counts as
// free, and allocate() takes never-published free blocks first, then evicts the least recently
// released published block.
class block_pool {
 public:
  explicit block_pool(int num_blocks, int cache_block_size = 0);
  int num_blocks() const;
  int num_free() const;  // allocatable: free plus evictable
  int num_used() const { return num_blocks() - num_free(); }
  // One block with refcount 1, or -1 when none is free.
  int allocate();
  // n blocks appended to out, all or nothing; false (out untouched) when fewer than n are free.
  bool allocate(int n, std::vector<int>& out);
  void retain(int block);   // refcount + 1; zf::error if the block is free or out of range
  void release(int block);  // refcount - 1; at 0 free (or evictable); zf::error if already free
  int refcount(int block) const;

  // --- prefix cache (no-ops / -1 when caching is off) ---
  bool caching() const { return bs_ > 0; }
  // The published block holding `tokens` (cache_block_size of them) right after `parent`
  // (-1: at the start of a sequence), or -1. Does not take a reference.
  int lookup(int parent, std::span<const int> tokens) const;
  // Takes a reference to a block found by lookup (reviving it if it was evictable).
  void acquire(int block);
  // Publishes a full, referenced block; false when the same content is already published
  // (then the block stays private and its children should not be published either).
  bool publish(int block, int parent, std::span<const int> tokens);
  bool evictable(int block) const { return ref_[block] == 0 && key_[block] != 0; }
  int num_cached() const { return n_cached_; }
  // Forgets every published block (after a weight update their K/V are stale): evictable ones
  // become plain free blocks, referenced ones stay with their holders, unpublished. Returns how
  // many were published.
  int clear_cache();

 private:
  uint64_t key_of(int parent, std::span<const int> tokens) const;
  void unlink(int block);  // out of the evictable list
  void unpublish(int block);
  std::size_t home(uint64_t key) const {
    return static_cast<std::size_t>(key) & (slots_.size() - 1);
  }
  int bs_;
  std::vector<int> ref_;
  std::vector<int> free_;  // LIFO: a just-freed (cache-warm) block is reused first
  // prefix cache: per block its key (0: not published), tokens, parent and parent generation
  std::vector<uint64_t> key_;
  std::vector<uint32_t> gen_;
  std::vector<int> parent_;
  std::vector<uint32_t> parent_gen_;
  std::vector<int> tokens_;  // [num_blocks][bs]
  // key -> published block: open addressing with linear probing and backward-shift deletion in
  // a power-of-two table of at least 2 x num_blocks slots (-1: empty), sized once: publishing
  // and evicting never allocate.
  std::vector<int> slots_;
  int n_cached_ = 0;
  std::vector<int> prev_, next_;  // evictable list, least recently released first
  int head_ = -1, tail_ = -1, n_evictable_ = 0;
};

}  // namespace zf
