// Step scheduler: budgets, ordering, admission, forks, preemption, cancellation, the static-batch
// baseline, and a randomized engine simulation that checks the block accounting every step.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "runtime/serve/scheduler.hpp"
#include "test_util.hpp"

using zf::testing::contains;
using zf::testing::error_of;

namespace {

zf::sched_options opts(int budget, int max_seqs, int bs,
                       zf::sched_policy p = zf::sched_policy::split_fuse) {
  zf::sched_options o;
  o.policy = p;
  o.token_budget = budget;
  o.max_seqs = max_seqs;
  o.block_size = bs;
  return o;
}

void add1(zf::scheduler& s, uint64_t id, int prompt) {
  const uint64_t ids[] = {id};
  s.add(ids, prompt);
}

// One engine step without a model: plan, then pretend the forward ran.
zf::step_plan step(zf::scheduler& s) {
  zf::step_plan p = s.schedule();
  s.complete(p);
  return p;
}

const zf::sched_chunk* chunk_of(const zf::step_plan& p, uint64_t id) {
  for (const auto& c : p.chunks)
    if (c.seq == id) return &c;
  return nullptr;
}

int sum_len(const zf::step_plan& p) {
  int n = 0;
  for (const auto& c : p.chunks) n += c.len;
  return n;
}

}  // namespace

TEST_CASE("sched: decodes go first and the budget holds") {
  zf::block_pool pool(64);
  zf::scheduler s(opts(8, 16, 4), pool);
  add1(s, 1, 5);
  add1(s, 2, 5);
  add1(s, 3, 5);
  auto p1 = step(s);  // 1 whole, 2 partly
  CHECK(p1.tokens == 8);
  REQUIRE(p1.chunks.size() == 2);
  CHECK(p1.chunks[0].seq == 1);
  CHECK(p1.chunks[0].len == 5);
  CHECK(p1.chunks[0].sample_for == std::vector<uint64_t>{1});
  CHECK(p1.chunks[1].seq == 2);
  CHECK(p1.chunks[1].len == 3);
  CHECK(p1.chunks[1].sample_for.empty());
  auto p2 = step(s);  // decode 1, the rest of 2, then all of 3
  REQUIRE(p2.chunks.size() == 3);
  CHECK(p2.chunks[0].seq == 1);
  CHECK(p2.chunks[0].start == 5);
  CHECK(p2.chunks[0].len == 1);
  CHECK(p2.chunks[0].sample_for == std::vector<uint64_t>{1});
  CHECK(p2.chunks[1].seq == 2);
  CHECK(p2.chunks[1].start == 3);
  CHECK(p2.chunks[1].len == 2);
  CHECK(p2.chunks[2].seq == 3);
  CHECK(p2.chunks[2].len == 5);
  CHECK(p2.tokens == 8);
  for (int i = 0; i < 20; ++i) {
    auto p = step(s);
    CHECK(p.tokens <= 8);
    CHECK(p.tokens == sum_len(p));
    bool seen_prefill = false;
    for (const auto& c : p.chunks) {
      bool decode = c.len == 1 && c.start + 1 == s.length(c.seq) - 1;
      if (!decode) seen_prefill = true;
      CHECK_FALSE((decode && seen_prefill));
    }
  }
  CHECK(s.computed(1) == s.length(1) - 1);
}

TEST_CASE("sched: a long prompt is split and only its last chunk samples") {
  zf::block_pool pool(16);
  zf::scheduler s(opts(8, 4, 4), pool);
  add1(s, 7, 20);
  CHECK(s.num_waiting() == 1);
  std::vector<int> starts;
  for (int i = 0; i < 3; ++i) {
    auto p = step(s);
    REQUIRE(p.chunks.size() == 1);
    starts.push_back(p.chunks[0].start);
    CHECK(p.chunks[0].len == (i < 2 ? 8 : 4));
    CHECK(p.chunks[0].sample_for.empty() == (i < 2));
  }
  CHECK(starts == std::vector<int>{0, 8, 16});
  CHECK(s.blocks(7).size() == 5);
  CHECK(s.computed(7) == 20);
  CHECK(s.length(7) == 21);
  auto d = step(s);  // position 20 needs a sixth block
  REQUIRE(d.chunks.size() == 1);
  CHECK(d.chunks[0].start == 20);
  CHECK(s.blocks(7).size() == 6);
}

TEST_CASE("sched: prefix caching shares the cached full blocks of a prompt's prefix") {
  zf::block_pool pool(40, 4);
  zf::sched_options o = opts(64, 8, 4);
  o.prefix_caching = true;
  zf::scheduler s(o, pool);
  std::vector<int> a(40);
  for (int i = 0; i < 40; ++i) a[std::size_t(i)] = 100 + i;
  const uint64_t one[] = {1};
  s.add(one, a);
  auto p1 = step(s);
  REQUIRE(p1.chunks.size() == 1);
  CHECK(p1.chunks[0].start == 0);
  CHECK(p1.chunks[0].len == 40);
  std::vector<int> b1(s.blocks(1).begin(), s.blocks(1).end());
  CHECK(pool.num_cached() == 10);
  // the same prompt while 1 runs: 9 blocks shared (the last token is always computed)
  const uint64_t two[] = {2};
  s.add(two, a);
  auto p2 = step(s);
  const zf::sched_chunk* c2 = chunk_of(p2, 2);
  REQUIRE(c2 != nullptr);
  CHECK(c2->start == 36);
  CHECK(c2->len == 4);
  CHECK(c2->sample_for == std::vector<uint64_t>{2});
  auto b2 = s.blocks(2);
  for (int i = 0; i < 9; ++i) {
    CHECK(b2[std::size_t(i)] == b1[std::size_t(i)]);
    CHECK(pool.refcount(b1[std::size_t(i)]) == 2);
  }
  CHECK(b2[9] != b1[9]);
  CHECK(s.cache_hits() == 36);
  CHECK(s.cache_queries() == 80);
  // both finish: the cached blocks stay findable; a prompt that differs at token 10 shares 2
  s.finish(1);
  s.finish(2);
  CHECK(pool.num_free() == 40);
  std::vector<int> c = a;
  c[10] = 7;
  const uint64_t three[] = {3};
  s.add(three, c);
  auto p3 = step(s);
  REQUIRE(p3.chunks.size() == 1);
  CHECK(p3.chunks[0].start == 8);
  CHECK(p3.chunks[0].len == 32);
  CHECK(s.blocks(3)[0] == b1[0]);
  CHECK(s.blocks(3)[1] == b1[1]);
  // a prompt of exactly two cached blocks computes its last block again
  const uint64_t four[] = {4};
  s.add(four, std::span<const int>(a).subspan(0, 8));
  auto p4 = step(s);
  const zf::sched_chunk* c4 = chunk_of(p4, 4);
  REQUIRE(c4 != nullptr);
  CHECK(c4->start == 4);
  CHECK(c4->len == 4);
  // without caching the same calls compute everything
  zf::block_pool plain(40);
  zf::scheduler t(opts(64, 8, 4), plain);
  t.add(one, a);
  step(t);
  t.add(two, a);
  auto q = step(t);
  REQUIRE(chunk_of(q, 2) != nullptr);
  CHECK(chunk_of(q, 2)->start == 0);
  CHECK(t.cache_queries() == 0);
}

TEST_CASE("sched: short prompts are packed to fill the budget in arrival order") {
  zf::block_pool pool(64);
  zf::scheduler s(opts(16, 64, 4), pool);
  for (uint64_t id = 1; id <= 6; ++id) add1(s, id, 3);
  auto p = step(s);
  CHECK(p.tokens == 16);
  REQUIRE(p.chunks.size() == 6);
  for (int i = 0; i < 6; ++i) CHECK(p.chunks[i].seq == uint64_t(i + 1));
  CHECK(p.chunks[5].len == 1);
  CHECK(s.num_running() == 6);
  CHECK(s.num_waiting() == 0);
}

TEST_CASE("sched: admission waits until the whole prompt fits and is FIFO") {
  zf::block_pool pool(4);
  zf::scheduler s(opts(64, 8, 4), pool);
  add1(s, 1, 12);  // 3 blocks
  add1(s, 2, 8);   // 2 blocks: does not fit while 1 runs
  add1(s, 3, 2);   // 1 block would fit, but FIFO: it waits behind 2
  auto p = step(s);
  CHECK(p.chunks.size() == 1);
  CHECK(s.num_waiting() == 2);
  CHECK(pool.num_free() == 1);
  for (int i = 0; i < 3; ++i) CHECK(chunk_of(step(s), 2) == nullptr);
  CHECK(s.blocks(2).empty());
  s.finish(1);
  CHECK(pool.num_free() == 4);
  p = step(s);
  REQUIRE(chunk_of(p, 2) != nullptr);
  CHECK(chunk_of(p, 2)->len == 8);
  REQUIRE(chunk_of(p, 3) != nullptr);
  CHECK(s.num_waiting() == 0);
  CHECK(contains(error_of([&] { add1(s, 9, 17); }),
                 "prompt of 17 tokens needs 5 blocks but the pool has only 4"));
  CHECK(contains(error_of([&] { add1(s, 2, 1); }), "in use"));
  const uint64_t dup[] = {10, 10};
  CHECK(contains(error_of([&] { s.add(dup, 1); }), "twice"));
  CHECK(s.num_waiting() == 0);
}

TEST_CASE("sched: max_seqs bounds running sequences and a group counts n") {
  zf::block_pool pool(64);
  zf::scheduler s(opts(64, 3, 4), pool);
  const uint64_t g[] = {1, 2};
  s.add(g, 4);
  add1(s, 3, 4);
  add1(s, 4, 4);
  step(s);
  CHECK(s.num_running() == 3);
  CHECK(s.num_waiting() == 1);
  for (int i = 0; i < 5; ++i) {
    auto p = step(s);
    CHECK(chunk_of(p, 4) == nullptr);
    CHECK(s.num_running() <= 3);
  }
  s.finish(2);
  auto p = step(s);
  CHECK(chunk_of(p, 4) != nullptr);
  CHECK(s.num_running() == 3);
  const uint64_t big[] = {20, 21, 22, 23};
  CHECK(contains(error_of([&] { s.add(big, 1); }), "max_seqs"));
}

TEST_CASE("sched: n=3 fork shares full blocks and copies the partial one") {
  // 10 tokens in blocks of 4: two full blocks and 2 rows of a third, plus 2 reserved blocks.
  CHECK(contains(error_of([] {
                   zf::block_pool small(4);
                   zf::scheduler t(opts(64, 8, 4), small);
                   const uint64_t ids[] = {1, 2, 3};
                   t.add(ids, 10);
                 }),
                 "needs 5 blocks"));
  zf::block_pool pool(5);
  zf::scheduler s(opts(64, 8, 4), pool);
  const uint64_t ids[] = {1, 2, 3};
  s.add(ids, 10);
  auto p = s.schedule();
  REQUIRE(p.chunks.size() == 1);
  CHECK(p.chunks[0].seq == 1);
  CHECK(p.chunks[0].len == 10);
  CHECK(p.chunks[0].sample_for == std::vector<uint64_t>{1, 2, 3});
  CHECK(s.num_running() == 3);
  CHECK(pool.num_free() == 2);  // reserved for the copies, not handed out
  CHECK(s.blocks(2).empty());
  s.complete(p);
  std::vector<int> b1(s.blocks(1).begin(), s.blocks(1).end());
  REQUIRE(b1.size() == 3);
  CHECK(pool.refcount(b1[0]) == 3);
  CHECK(pool.refcount(b1[1]) == 3);
  CHECK(pool.refcount(b1[2]) == 1);
  CHECK(pool.num_free() == 0);
  std::set<int> partials = {b1[2]};
  for (uint64_t id : {2, 3}) {
    auto b = s.blocks(id);
    REQUIRE(b.size() == 3);
    CHECK(b[0] == b1[0]);
    CHECK(b[1] == b1[1]);
    partials.insert(b[2]);
    CHECK(s.computed(id) == 10);
    CHECK(s.length(id) == 11);
  }
  CHECK(partials.size() == 3);
  auto d = s.schedule();
  REQUIRE(d.copies.size() == 2);
  for (const auto& c : d.copies) {
    CHECK(c.src == b1[2]);
    CHECK(c.rows == 2);
    CHECK(partials.count(c.dst) == 1);
    CHECK(c.dst != b1[2]);
  }
  CHECK(d.chunks.size() == 3);
  for (const auto& c : d.chunks) CHECK(c.sample_for == std::vector<uint64_t>{c.seq});
  s.complete(d);
  CHECK(s.schedule().copies.empty());  // handed out once
  for (uint64_t id : {1, 2, 3}) s.finish(id);
  CHECK(pool.num_free() == 5);
  CHECK(s.idle());
}

TEST_CASE("sched: a choice leaving before the fork") {
  zf::block_pool pool(8);
  zf::scheduler s(opts(4, 8, 4), pool);
  const uint64_t ids[] = {1, 2, 3};
  s.add(ids, 6);
  step(s);  // 4 of 6 under id 1
  CHECK(pool.num_free() == 6);
  s.finish(1);  // the group goes on under 2
  CHECK(s.num_running() == 2);
  CHECK(s.blocks(2).size() == 2);
  auto p = step(s);
  REQUIRE(p.chunks.size() == 1);
  CHECK(p.chunks[0].seq == 2);
  CHECK(p.chunks[0].start == 4);
  CHECK(p.chunks[0].sample_for == std::vector<uint64_t>{2, 3});
  CHECK(pool.refcount(s.blocks(2)[0]) == 2);
  CHECK(s.blocks(3).size() == 2);
  s.finish(2);
  s.finish(3);
  CHECK(pool.num_free() == 8);
  CHECK(s.idle());
}

TEST_CASE("sched: preemption under pool pressure and recompute") {
  zf::block_pool pool(4);
  zf::scheduler s(opts(16, 8, 2), pool);
  add1(s, 1, 3);
  add1(s, 2, 3);
  step(s);  // both prompts, 2 blocks each: the pool is full
  CHECK(pool.num_free() == 0);
  auto p = step(s);  // positions 3 fit in block 1
  CHECK(p.preempted.empty());
  p = step(s);  // position 4 of 1 needs a block: 2 (newest) goes
  CHECK(p.preempted == std::vector<uint64_t>{2});
  CHECK(chunk_of(p, 2) == nullptr);
  REQUIRE(chunk_of(p, 1) != nullptr);
  CHECK(s.computed(2) == 0);
  CHECK(s.length(2) == 5);
  CHECK(s.blocks(2).empty());
  CHECK(s.num_waiting() == 1);
  // 2 needs 3 blocks to recompute 5 tokens; 1 holds 3 of 4.
  p = step(s);
  CHECK(chunk_of(p, 2) == nullptr);
  s.finish(1);
  p = step(s);
  const auto* c = chunk_of(p, 2);
  REQUIRE(c != nullptr);
  CHECK(c->start == 0);
  CHECK(c->len == 5);
  CHECK(c->sample_for == std::vector<uint64_t>{2});
  CHECK(s.length(2) == 6);
  for (int i = 0; i < 3; ++i) CHECK(chunk_of(step(s), 2) != nullptr);
  CHECK(s.length(2) == 9);
  s.finish(2);
  CHECK(pool.num_free() == 4);
}

TEST_CASE("sched: preempt_all sends every running sequence back to recompute, in order") {
  zf::block_pool pool(16);
  zf::scheduler s(opts(4, 8, 2), pool);
  add1(s, 1, 3);
  add1(s, 2, 6);  // its prompt takes two steps
  step(s);
  step(s);  // 1 decodes; 2 is still prefilling
  CHECK(s.preempt_all() == 2);
  CHECK(pool.num_free() == 16);
  CHECK(s.num_running() == 0);
  CHECK(s.num_waiting() == 2);
  CHECK(s.length(1) == 5);  // the prompt and the tokens generated so far, recomputed
  auto p = s.schedule();
  REQUIRE(p.chunks.size() == 1);  // 5 + 6 do not fit a budget of 4: 1 comes back first
  CHECK(p.chunks[0].seq == 1);
  CHECK(p.chunks[0].start == 0);
  CHECK(p.chunks[0].len == 4);
}

TEST_CASE("sched: a sequence preempts itself when it is the newest") {
  zf::block_pool pool(3);
  zf::scheduler s(opts(16, 8, 2), pool);
  add1(s, 1, 3);  // 2 blocks; its first decode (position 3) still fits
  add1(s, 2, 2);  // 1 block; its first decode (position 2) needs a new one
  step(s);
  CHECK(pool.num_free() == 0);
  auto p = step(s);
  CHECK(p.preempted == std::vector<uint64_t>{2});
  REQUIRE(p.chunks.size() == 1);
  CHECK(p.chunks[0].seq == 1);
  CHECK(pool.num_free() == 1);
  CHECK(s.num_waiting() == 1);
  CHECK(s.length(2) == 3);
}

TEST_CASE("sched: finish mid-prefill frees everything") {
  zf::block_pool pool(16);
  zf::scheduler s(opts(8, 4, 4), pool);
  add1(s, 5, 40);
  step(s);
  step(s);
  CHECK(s.computed(5) == 16);
  CHECK(pool.num_free() == 6);
  s.finish(5);
  s.finish(5);  // idempotent
  s.finish(99);
  CHECK(pool.num_free() == 16);
  CHECK(s.idle());
  CHECK(s.schedule().empty());
}

TEST_CASE("sched: static_batch never admits while a batch runs") {
  zf::block_pool pool(64);
  zf::scheduler s(opts(8, 2, 4, zf::sched_policy::static_batch), pool);
  add1(s, 1, 6);
  add1(s, 2, 20);  // longer than the budget
  add1(s, 3, 2);
  auto p = step(s);  // whole prompts only: 6 then 20 does not fit
  REQUIRE(p.chunks.size() == 1);
  CHECK(p.chunks[0].len == 6);
  CHECK(s.num_running() == 2);
  CHECK(s.num_waiting() == 1);
  p = step(s);  // 20 > 8 alone
  REQUIRE(p.chunks.size() == 1);
  CHECK(p.chunks[0].len == 20);
  CHECK(p.chunks[0].sample_for == std::vector<uint64_t>{2});
  p = step(s);
  CHECK(p.chunks.size() == 2);  // the batch decodes together
  s.finish(1);
  for (int i = 0; i < 4; ++i) {
    p = step(s);
    CHECK(p.chunks.size() == 1);
    CHECK(chunk_of(p, 3) == nullptr);
    CHECK(s.num_waiting() == 1);
  }
  s.finish(2);
  p = step(s);
  REQUIRE(p.chunks.size() == 1);
  CHECK(p.chunks[0].seq == 3);
}

namespace {

// A fake engine over the scheduler: random arrivals, lengths, cancels; fake K/V rows that make
// wrong sharing or a missing copy visible; invariants checked after every step.
// With caching, prompts come from a few shared prefixes, and a prompt slot's value is a hash of
// the prompt's tokens up to it, so a block shared through the cache must hold exactly what the
// sequence would have computed.
void simulate(zf::sched_policy policy, uint32_t seed, bool caching = false) {
  const int bs = 4, num_blocks = 48, budget = 24, max_seqs = 8;
  zf::block_pool pool(num_blocks, caching ? bs : 0);
  zf::sched_options so = opts(budget, max_seqs, bs, policy);
  so.prefix_caching = caching;
  zf::scheduler s(so, pool);
  std::map<uint64_t, std::vector<int64_t>> content;  // root id -> per prompt slot value
  std::mt19937 rng(seed);
  auto rnd = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<std::vector<int64_t>> mem(num_blocks, std::vector<int64_t>(bs, -1));
  std::map<uint64_t, uint64_t> root;  // id -> the request's first id
  std::map<uint64_t, int> prompt, target, generated;
  std::set<uint64_t> live;
  uint64_t next_id = 1;
  auto value = [&](uint64_t id, int pos) -> int64_t {
    if (caching && pos < prompt[id]) return content[root[id]][std::size_t(pos)];
    return int64_t(pos < prompt[id] ? root[id] : id) * 100000 + pos;
  };
  std::vector<std::vector<int>> prefixes(3);
  for (auto& p : prefixes)
    for (int i = 0; i < 40; ++i) p.push_back(int(rng() % 5));
  int steps = 0, preemptions = 0, forks = 0;
  for (; steps < 20000; ++steps) {
    bool arrivals = steps < 4000;
    if (!arrivals && s.idle()) break;
    if (arrivals && rnd(0, 2) == 0) {
      int n = std::min(rnd(1, 6), 4) == 4 ? rnd(2, 3) : 1;
      int len = rnd(1, 60);
      std::vector<uint64_t> ids;
      for (int i = 0; i < n; ++i) {
        uint64_t id = next_id++;
        ids.push_back(id);
        root[id] = ids[0];
        prompt[id] = len;
        target[id] = rnd(1, 40);
        generated[id] = 0;
        live.insert(id);
      }
      if (caching) {
        const auto& pre = prefixes[std::size_t(rnd(0, 2))];
        std::vector<int> toks(pre.begin(), pre.begin() + rnd(0, std::min(len, 40)));
        while (int(toks.size()) < len) toks.push_back(rnd(0, 1));
        auto& cv = content[ids[0]];
        int64_t h = 17;
        for (int t : toks) cv.push_back(h = (h * 1000003 + t + 1) % 1000000007);
        s.add(ids, std::span<const int>(toks));
      } else {
        s.add(ids, len);
      }
      forks += n > 1;
    }
    if (arrivals && rnd(0, 9) == 0 && !live.empty()) {  // a cancel anywhere
      auto it = live.begin();
      std::advance(it, rnd(0, int(live.size()) - 1));
      s.finish(*it);
      live.erase(it);
    }
    zf::step_plan p = s.schedule();
    preemptions += int(p.preempted.size());
    CHECK(p.tokens == sum_len(p));
    if (policy == zf::sched_policy::split_fuse || p.chunks.size() > 1) CHECK(p.tokens <= budget);
    CHECK(s.num_running() <= max_seqs);
    if (!s.idle()) CHECK_FALSE(p.empty());  // someone can always make progress
    for (const auto& c : p.copies) {
      CHECK(pool.refcount(c.dst) == 1);
      for (int r = 0; r < c.rows; ++r) mem[c.dst][r] = mem[c.src][r];
    }
    for (const auto& c : p.chunks) {
      REQUIRE(live.count(c.seq) == 1);
      CHECK(c.start == s.computed(c.seq));
      CHECK(c.len >= 1);
      CHECK(c.start + c.len <= s.length(c.seq));
      CHECK(c.sample_for.empty() == (c.start + c.len < s.length(c.seq)));
      auto b = s.blocks(c.seq);
      REQUIRE(int(b.size()) * bs >= c.start + c.len);
      for (int pos = c.start; pos < c.start + c.len; ++pos) {
        CHECK(pool.refcount(b[pos / bs]) == 1);  // never write a shared block
        mem[b[pos / bs]][pos % bs] = value(c.seq, pos);
      }
      int wrong = 0;  // attention reads the whole prefix: every row must hold this sequence's
      for (int pos = 0; pos < c.start + c.len; ++pos)
        wrong += mem[b[pos / bs]][pos % bs] != value(c.seq, pos);
      CHECK(wrong == 0);
    }
    s.complete(p);
    for (const auto& c : p.chunks)
      for (uint64_t id : c.sample_for)
        if (++generated[id] >= target[id]) {
          s.finish(id);
          live.erase(id);
        }
    // Block accounting: refcounts equal table references; a table covers what is computed.
    // (An unforked group's other choices own nothing yet: its first live id holds the table.)
    std::vector<int> refs(num_blocks, 0);
    std::map<uint64_t, int> holders;  // root -> live ids with a table
    for (uint64_t id : live) {
      auto b = s.blocks(id);
      for (int x : b) ++refs[x];
      if (!b.empty()) ++holders[root[id]];
      if (!b.empty() || s.computed(id) == 0) CHECK(int(b.size()) >= (s.computed(id) + bs - 1) / bs);
    }
    for (uint64_t id : live)
      if (s.blocks(id).empty() && s.computed(id) > 0) {
        uint64_t leader = *std::find_if(live.begin(), live.end(),
                                        [&](uint64_t x) { return root[x] == root[id]; });
        CHECK(leader != id);
        CHECK(holders[root[id]] == 1);
        CHECK(s.computed(leader) == s.computed(id));
      }
    int used = 0;
    for (int x = 0; x < num_blocks; ++x) {
      CHECK(pool.refcount(x) == refs[x]);
      used += refs[x] > 0;
    }
    CHECK(used + pool.num_free() == num_blocks);
  }
  CHECK(steps < 20000);
  CHECK(live.empty());
  CHECK(s.idle());
  CHECK(pool.num_free() == num_blocks);
  CHECK(forks > 0);
  if (policy == zf::sched_policy::split_fuse) CHECK(preemptions > 0);
  if (caching) CHECK(s.cache_hits() > s.cache_queries() / 10);
  MESSAGE("steps ", steps, " preemptions ", preemptions, " forks ", forks, " cache hits ",
          s.cache_hits(), " of ", s.cache_queries());
}

}  // namespace

TEST_CASE("sched: randomized simulation keeps the block accounting exact (split_fuse)") {
  simulate(zf::sched_policy::split_fuse, 1234);
  simulate(zf::sched_policy::split_fuse, 99);
}

TEST_CASE("sched: randomized simulation keeps the block accounting exact (static_batch)") {
  simulate(zf::sched_policy::static_batch, 777);
}

TEST_CASE("sched: randomized simulation with prefix caching shares only identical prefixes") {
  simulate(zf::sched_policy::split_fuse, 4321, true);
  simulate(zf::sched_policy::split_fuse, 8, true);
  simulate(zf::sched_policy::static_batch, 55, true);
}
