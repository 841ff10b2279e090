// Paged KV cache: block pool bookkeeping (refcounts, LIFO reuse, all-or-nothing, errors) and the
// storage layout and copy-on-write copies.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <vector>

#include "runtime/serve/kv_cache.hpp"
#include "test_util.hpp"

using zf::testing::contains;
using zf::testing::error_of;

TEST_CASE("kv pool: allocate and free with refcounts") {
  zf::block_pool pool(4);
  CHECK(pool.num_blocks() == 4);
  CHECK(pool.num_free() == 4);
  std::set<int> got;
  for (int i = 0; i < 4; ++i) {
    int b = pool.allocate();
    CHECK(b >= 0);
    CHECK(b < 4);
    CHECK(pool.refcount(b) == 1);
    got.insert(b);
  }
  CHECK(got.size() == 4);
  CHECK(pool.num_free() == 0);
  CHECK(pool.num_used() == 4);
  CHECK(pool.allocate() == -1);

  pool.retain(2);
  CHECK(pool.refcount(2) == 2);
  pool.release(2);
  CHECK(pool.refcount(2) == 1);
  CHECK(pool.num_free() == 0);  // still held once
  pool.release(2);
  CHECK(pool.refcount(2) == 0);
  CHECK(pool.num_free() == 1);
  CHECK(pool.allocate() == 2);
}

TEST_CASE("kv pool: the last freed block is reused first") {
  zf::block_pool pool(8);
  std::vector<int> b;
  CHECK(pool.allocate(8, b));
  pool.release(b[3]);
  pool.release(b[6]);
  pool.release(b[1]);
  CHECK(pool.allocate() == b[1]);
  CHECK(pool.allocate() == b[6]);
  CHECK(pool.allocate() == b[3]);
  CHECK(pool.allocate() == -1);
}

TEST_CASE("kv pool: allocate n is all or nothing") {
  zf::block_pool pool(5);
  std::vector<int> out = {42};
  CHECK(pool.allocate(3, out));
  CHECK(out.size() == 4);
  CHECK(out[0] == 42);  // appended, existing entries kept
  CHECK(pool.num_free() == 2);
  std::vector<int> more = {7};
  CHECK_FALSE(pool.allocate(3, more));
  CHECK(more == std::vector<int>{7});  // untouched
  CHECK(pool.num_free() == 2);
  CHECK(pool.allocate(2, more));
  CHECK(more.size() == 3);
  CHECK(pool.num_free() == 0);
  CHECK(pool.allocate(0, more));
}

TEST_CASE("kv pool: misuse is a zf::error") {
  zf::block_pool pool(3);
  int b = pool.allocate();
  pool.release(b);
  CHECK(contains(error_of([&] { pool.release(b); }), "double free"));
  CHECK(contains(error_of([&] { pool.retain(b); }), "free block"));
  CHECK(contains(error_of([&] { pool.retain(3); }), "out of range"));
  CHECK(contains(error_of([&] { pool.release(-1); }), "out of range"));
  CHECK(contains(error_of([&] { (void)pool.refcount(9); }), "out of range"));
  CHECK(contains(error_of([] { zf::block_pool p(0); }), "num_blocks"));
  CHECK(pool.num_free() == 3);  // failed calls changed nothing
}

TEST_CASE("kv prefix cache: published blocks are found by exact content and parent") {
  zf::block_pool pool(8, 2);
  REQUIRE(pool.caching());
  const std::vector<int> a{1, 2}, b{3, 4}, c{5, 6};
  int b0 = pool.allocate(), b1 = pool.allocate();
  CHECK(pool.lookup(-1, a) == -1);
  CHECK(pool.publish(b0, -1, a));
  CHECK(pool.publish(b1, b0, b));
  CHECK(pool.lookup(-1, a) == b0);
  CHECK(pool.lookup(b0, b) == b1);
  CHECK(pool.lookup(-1, b) == -1);                    // same tokens, other position in the chain
  CHECK(pool.lookup(b0, c) == -1);                    // other tokens
  CHECK(pool.lookup(b1, b) == -1);                    // other parent
  CHECK(pool.lookup(-1, std::vector<int>{1}) == -1);  // not a whole block
  // the same content again is not published twice; an already published block neither
  int dup = pool.allocate();
  CHECK_FALSE(pool.publish(dup, -1, a));
  CHECK_FALSE(pool.publish(b0, -1, c));
  CHECK(pool.num_cached() == 2);
  // a released published block stays findable and counts as free
  CHECK(pool.num_free() == 5);
  pool.release(b1);
  CHECK(pool.num_free() == 6);
  CHECK(pool.evictable(b1));
  CHECK(pool.lookup(b0, b) == b1);
  pool.acquire(b1);  // revived: in use again, not free
  CHECK(pool.refcount(b1) == 1);
  CHECK(pool.num_free() == 5);
  pool.acquire(b1);
  CHECK(pool.refcount(b1) == 2);
  CHECK(contains(error_of([&] { pool.acquire(dup); }), "not published"));
  CHECK(contains(error_of([&] { pool.publish(pool.num_blocks() - 1, -1, c); }), "not in use"));
  CHECK(contains(error_of([&] {
                   pool.publish(dup, -1, std::vector<int>{1, 2, 3});
                 }),
                 "publish of 3 tokens, block size is 2"));
}

TEST_CASE("kv prefix cache: clear_cache forgets every block, in use or evictable") {
  zf::block_pool pool(6, 2);
  const std::vector<int> a{1, 2}, b{3, 4};
  const int b0 = pool.allocate(), b1 = pool.allocate();
  CHECK(pool.publish(b0, -1, a));
  CHECK(pool.publish(b1, b0, b));
  pool.release(b1);  // evictable
  CHECK(pool.clear_cache() == 2);
  CHECK(pool.num_cached() == 0);
  CHECK(pool.lookup(-1, a) == -1);
  CHECK_FALSE(pool.evictable(b1));
  CHECK(pool.refcount(b0) == 1);  // its holder keeps it, unpublished
  CHECK(pool.num_free() == 5);
  pool.release(b0);
  CHECK(pool.num_free() == 6);
  CHECK(pool.clear_cache() == 0);
  CHECK(pool.publish(pool.allocate(), -1, a));  // the index works on
  CHECK(pool.lookup(-1, a) >= 0);
}

TEST_CASE("kv prefix cache: never-published blocks go first, then the least recently released") {
  zf::block_pool pool(4, 1);
  std::vector<int> blk;
  REQUIRE(pool.allocate(4, blk));
  for (int i = 0; i < 3; ++i) CHECK(pool.publish(blk[i], i ? blk[i - 1] : -1, std::vector<int>{i}));
  pool.release(blk[1]);  // released order: 1, 0, 3 (unpublished), 2
  pool.release(blk[0]);
  pool.release(blk[3]);
  pool.release(blk[2]);
  CHECK(pool.num_free() == 4);
  CHECK(pool.num_used() == 0);
  CHECK(pool.allocate() == blk[3]);  // the free list first: nothing is evicted
  CHECK(pool.num_cached() == 3);
  CHECK(pool.allocate() == blk[1]);  // then the LRU published block, whose content goes
  CHECK(pool.num_cached() == 2);
  CHECK(pool.lookup(blk[0], std::vector<int>{1}) == -1);
  CHECK(pool.lookup(-1, std::vector<int>{0}) == blk[0]);
  // blk[2] was published under blk[1]; blk[1] now holds other content, so blk[2] must not match
  // even if the new content is published under the same parent id with the old tokens
  CHECK(pool.publish(blk[1], blk[0], std::vector<int>{1}));
  CHECK(pool.lookup(blk[0], std::vector<int>{1}) == blk[1]);
  CHECK(pool.lookup(blk[1], std::vector<int>{2}) == -1);
  CHECK(pool.allocate() == blk[0]);
  CHECK(pool.allocate() == blk[2]);
  CHECK(pool.allocate() == -1);
  CHECK(pool.num_cached() == 1);  // blk[1], in use
}

TEST_CASE("kv prefix cache: the index finds every published block through heavy churn") {
  // 64 blocks of one token, 200 distinct contents: home slots collide often and evictions
  // delete from the middle of probe runs, so a wrong backward shift would hide some block.
  zf::block_pool pool(64, 1);
  std::mt19937 rng(7);
  std::map<int, int> expect;  // token -> published block
  std::vector<int> held;
  for (int op = 0; op < 20000; ++op) {
    if (held.size() < 40 && rng() % 2 == 0) {
      const int b = pool.allocate();
      if (b < 0) continue;
      std::erase_if(expect, [b](const auto& e) { return e.second == b; });  // evicted
      const int t = int(rng() % 200);
      if (pool.publish(b, -1, std::vector<int>{t})) {
        REQUIRE(expect.count(t) == 0);
        expect[t] = b;
      }
      held.push_back(b);
    } else if (!held.empty()) {
      const std::size_t i = rng() % held.size();
      pool.release(held[i]);
      held.erase(held.begin() + long(i));
    }
    if (op % 50 == 0) {
      CHECK(pool.num_cached() == int(expect.size()));
      int missing = 0, wrong = 0;
      for (int t = 0; t < 200; ++t) {
        const int got = pool.lookup(-1, std::vector<int>{t});
        auto it = expect.find(t);
        missing += it != expect.end() && got != it->second;
        wrong += it == expect.end() && got != -1;
      }
      CHECK(missing == 0);
      CHECK(wrong == 0);
    }
  }
  CHECK(expect.size() > 20);
}

TEST_CASE("kv pool: without caching, lookups miss and publishing is refused") {
  zf::block_pool pool(2);
  int b = pool.allocate();
  CHECK_FALSE(pool.caching());
  CHECK_FALSE(pool.publish(b, -1, std::vector<int>{1}));
  CHECK(pool.lookup(-1, std::vector<int>{1}) == -1);
  pool.release(b);
  CHECK(pool.num_free() == 2);
}

TEST_CASE("kv storage: layout offsets and sizes") {
  const int n_layer = 3, num_blocks = 5, bs = 4, dim = 6;
  zf::kv_storage kv(n_layer, num_blocks, bs, dim);
  CHECK(kv.block_size() == bs);
  CHECK(kv.kv_dim() == dim);
  CHECK(kv.num_blocks() == num_blocks);
  CHECK(kv.bytes() == 2u * n_layer * num_blocks * bs * dim * sizeof(float));
  const std::size_t per_block = bs * dim;
  CHECK(kv.k(0, 1) - kv.k(0, 0) == static_cast<std::ptrdiff_t>(per_block));
  CHECK(kv.k(1, 0) - kv.k(0, 0) == static_cast<std::ptrdiff_t>(num_blocks * per_block));
  CHECK(kv.v(2, 3) - kv.v(0, 0) == static_cast<std::ptrdiff_t>((2 * num_blocks + 3) * per_block));
  CHECK(kv.k(0, 0) != kv.v(0, 0));
  CHECK(kv.k(0, 0)[0] == 0.0f);  // zero-initialised
}

TEST_CASE("kv storage: copy_block copies the first rows of every layer, K and V") {
  const int n_layer = 2, num_blocks = 4, bs = 4, dim = 3;
  zf::kv_storage kv(n_layer, num_blocks, bs, dim);
  for (int l = 0; l < n_layer; ++l)
    for (int b = 0; b < num_blocks; ++b)
      for (int i = 0; i < bs * dim; ++i) {
        kv.k(l, b)[i] = float(1000 * l + 100 * b + i);
        kv.v(l, b)[i] = -float(1000 * l + 100 * b + i);
      }
  kv.copy_block(1, 3, 2);
  for (int l = 0; l < n_layer; ++l) {
    for (int i = 0; i < bs * dim; ++i) {
      bool copied = i < 2 * dim;
      int from = copied ? 1 : 3;
      CHECK(kv.k(l, 3)[i] == float(1000 * l + 100 * from + i));
      CHECK(kv.v(l, 3)[i] == -float(1000 * l + 100 * from + i));
      CHECK(kv.k(l, 1)[i] == float(1000 * l + 100 + i));  // source unchanged
    }
    CHECK(kv.k(l, 2)[0] == float(1000 * l + 200));  // other blocks unchanged
  }
  CHECK(contains(error_of([&] { kv.copy_block(0, 4, 1); }), "out of range"));
  CHECK(contains(error_of([&] { kv.copy_block(0, 1, 5); }), "rows"));
}
