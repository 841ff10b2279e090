// Step scheduler: Dynamic SplitFuse and a static-batch baseline over a paged block pool.
#include "runtime/serve/scheduler.hpp"

#include <algorithm>

#include "runtime/core/error.hpp"

namespace zf {

// One schedulable unit: a single sequence, or a group of choices before their fork (then
// `choices` holds every unfinished id, `id` == choices[0] owns the blocks and the chunks).
struct scheduler::seq {
  uint64_t id = 0;
  std::vector<uint64_t> choices;
  int prefill = 0;   // tokens to prefill since (re)admission: prompt, or prompt + generated
  int length = 0;    // prompt + generated
  int computed = 0;  // tokens with K/V in the cache
  bool running = false;
  bool decoding = false;  // its prefill has sampled: from now on one decode per step
  std::vector<int> blocks;
  // prefix caching: the prompt's tokens (empty: unknown), the cached blocks found by the last
  // fits() (admission takes them), leading blocks published or found, and whether to go on
  std::vector<int> tokens;
  std::vector<int> hits;
  int published = 0;
  bool publishing = false;
  std::size_t slot = 0;  // index in state::all
};

struct scheduler::state {
  std::vector<std::unique_ptr<seq>> all;     // owner; swap-remove keeps deletion O(1)
  std::vector<std::unique_ptr<seq>> spare;   // recycled objects keep their vectors' capacity
  std::unordered_map<uint64_t, seq*> by_id;  // every unfinished id (all of a group's choices)
  std::deque<seq*> waiting;                  // FIFO; preempted sequences go to the front
  std::vector<seq*> running;                 // admission order (fork children follow their leader)
  std::vector<block_copy> pending;  // copy-on-write from forks, handed out by the next schedule()
  int reserved = 0;                 // free blocks promised to unforked groups: (choices - 1) each
  int n_running = 0;                // running ids (a group counts each choice)
};

namespace {
int blocks_for(int tokens, int bs) {
  return (tokens + bs - 1) / bs;
}
}  // namespace

scheduler::scheduler(const sched_options& o, block_pool& pool)
    : o_(o), pool_(pool), s_(std::make_unique<state>()) {
  if (o_.token_budget < 1) fail("scheduler: token_budget must be >= 1, got {}", o_.token_budget);
  if (o_.max_seqs < 1) fail("scheduler: max_seqs must be >= 1, got {}", o_.max_seqs);
  if (o_.block_size < 1) fail("scheduler: block_size must be >= 1, got {}", o_.block_size);
}

scheduler::~scheduler() = default;

void scheduler::add(std::span<const uint64_t> ids, std::span<const int> prompt) {
  add(ids, static_cast<int>(prompt.size()));
  if (o_.prefix_caching) s_->waiting.back()->tokens.assign(prompt.begin(), prompt.end());
}

void scheduler::add(std::span<const uint64_t> ids, int prompt_len) {
  if (ids.empty()) fail("scheduler: a request needs at least one id");
  if (prompt_len < 1) fail("scheduler: prompt of {} tokens (need >= 1)", prompt_len);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (s_->by_id.count(ids[i])) fail("scheduler: id {} is already in use", ids[i]);
    for (std::size_t j = 0; j < i; ++j)
      if (ids[j] == ids[i]) fail("scheduler: id {} appears twice in one request", ids[i]);
  }
  // Rejected up front: a request that could never be admitted would block the FIFO forever.
  int n = static_cast<int>(ids.size());
  if (n > o_.max_seqs) fail("scheduler: request of {} choices but max_seqs is {}", n, o_.max_seqs);
  int need = blocks_for(prompt_len, o_.block_size) + (n - 1);
  if (need > pool_.num_blocks())
    fail("prompt of {} tokens needs {} blocks but the pool has only {}", prompt_len, need,
         pool_.num_blocks());
  seq* q = new_seq();
  q->id = ids[0];
  q->choices.assign(ids.begin(), ids.end());
  q->prefill = q->length = prompt_len;
  q->computed = 0;
  q->running = q->decoding = false;
  q->blocks.clear();
  q->tokens.clear();
  q->hits.clear();
  q->published = 0;
  q->publishing = false;
  for (uint64_t id : ids) s_->by_id[id] = q;
  s_->waiting.push_back(q);
}

// Gives q's blocks back, last first (so cached tails are evicted before the heads that other
// prompts share); a block that becomes free drops any copy still aimed at it.
void scheduler::drop_blocks(seq* q) {
  for (auto it = q->blocks.rbegin(); it != q->blocks.rend(); ++it) {
    const int b = *it;
    pool_.release(b);
    if (pool_.refcount(b) == 0)
      std::erase_if(s_->pending, [b](const block_copy& c) { return c.dst == b; });
  }
  q->blocks.clear();
}

void scheduler::unrun(seq* q) {
  drop_blocks(q);
  s_->reserved -= static_cast<int>(q->choices.size()) - 1;
  s_->n_running -= static_cast<int>(q->choices.size());
  s_->running.erase(std::find(s_->running.begin(), s_->running.end(), q));
  q->running = false;
}

scheduler::seq* scheduler::new_seq() {
  std::unique_ptr<seq> p;
  if (s_->spare.empty()) {
    p = std::make_unique<seq>();
  } else {
    p = std::move(s_->spare.back());
    s_->spare.pop_back();
  }
  p->slot = s_->all.size();
  s_->all.push_back(std::move(p));
  return s_->all.back().get();
}

void scheduler::destroy(seq* q) {
  std::size_t i = q->slot;
  std::unique_ptr<seq> p = std::move(s_->all[i]);
  if (i + 1 != s_->all.size()) {
    s_->all[i] = std::move(s_->all.back());
    s_->all[i]->slot = i;
  }
  s_->all.pop_back();
  s_->spare.push_back(std::move(p));
}

// Recompute: the sequence comes back with everything it knows as its prompt.
void scheduler::preempt(seq* q, step_plan& plan) {
  unrun(q);
  std::erase_if(plan.chunks, [&](const sched_chunk& c) {
    if (c.seq != q->id) return false;
    plan.tokens -= c.len;
    return true;
  });
  q->computed = 0;
  q->prefill = q->length;
  q->decoding = false;
  q->published = 0;
  s_->waiting.push_front(q);
  plan.preempted.push_back(q->id);
}

int scheduler::preempt_all() {
  step_plan none;
  while (!s_->running.empty()) preempt(s_->running.back(), none);
  s_->pending.clear();  // copies between blocks that are all free now
  return static_cast<int>(none.preempted.size());
}

// The prompt's leading full blocks in the prefix cache, into q->hits. The last prompt token is
// never taken from the cache: the prefill must compute at least one row to sample from.
void scheduler::match(seq* q) {
  q->hits.clear();
  if (!o_.prefix_caching || q->tokens.empty()) return;
  const int bs = o_.block_size;
  const int usable = std::min(static_cast<int>(q->tokens.size()), q->prefill - 1) / bs;
  int parent = -1;
  for (int i = 0; i < usable; ++i) {
    const int b = pool_.lookup(parent, std::span<const int>(q->tokens).subspan(i * bs, bs));
    if (b < 0) break;
    q->hits.push_back(b);
    parent = b;
  }
}

bool scheduler::fits(seq* q) {
  if (s_->n_running + static_cast<int>(q->choices.size()) > o_.max_seqs) return false;
  match(q);
  // new blocks, plus the cached ones that stop counting as free when revived
  int need = blocks_for(q->prefill, o_.block_size) - static_cast<int>(q->hits.size()) +
             static_cast<int>(q->choices.size()) - 1;
  for (int b : q->hits) need += pool_.evictable(b) ? 1 : 0;
  return pool_.num_free() - s_->reserved >= need;
}

// Admits the waiting front, which fits() has just checked (and matched).
void scheduler::admit(seq* q) {
  s_->waiting.pop_front();
  for (int b : q->hits) pool_.acquire(b);  // first: allocation below may evict free cached ones
  q->blocks.assign(q->hits.begin(), q->hits.end());
  const int fresh = blocks_for(q->prefill, o_.block_size) - static_cast<int>(q->hits.size());
  bool ok = pool_.allocate(fresh, q->blocks);
  if (!ok) fail("scheduler: admission without free blocks (internal error)");
  q->computed = static_cast<int>(q->hits.size()) * o_.block_size;
  q->published = static_cast<int>(q->hits.size());
  q->publishing = o_.prefix_caching && !q->tokens.empty();
  if (q->publishing) {
    cache_queries_ += static_cast<uint64_t>(std::min<std::size_t>(q->tokens.size(), q->prefill));
    cache_hits_ += static_cast<uint64_t>(q->computed);
  }
  q->hits.clear();
  s_->reserved += static_cast<int>(q->choices.size()) - 1;
  s_->n_running += static_cast<int>(q->choices.size());
  q->running = true;
  s_->running.push_back(q);
}

// Publishes the prompt blocks that q's prefill has just filled, in order, while the cache
// takes them (a block whose content another block already holds ends the chain).
void scheduler::publish(seq* q) {
  const int bs = o_.block_size;
  const int full = std::min(q->computed, static_cast<int>(q->tokens.size())) / bs;
  for (; q->publishing && q->published < full; ++q->published) {
    const int i = q->published;
    const int parent = i > 0 ? q->blocks[static_cast<std::size_t>(i) - 1] : -1;
    if (!pool_.publish(q->blocks[static_cast<std::size_t>(i)], parent,
                       std::span<const int>(q->tokens).subspan(i * bs, bs)))
      q->publishing = false;
  }
}

// Plans the prefill chunk [computed, computed + len); it samples when it reaches the end.
void scheduler::add_chunk(seq* q, int len, step_plan& plan) {
  sched_chunk& c = plan.chunks.emplace_back();
  c.seq = q->id;
  c.start = q->computed;
  c.len = len;
  if (q->computed + len == q->length) c.sample_for = q->choices;
  plan.tokens += len;
}

// Decodes of running sequences, oldest first, while the budget lasts (with more decoders than
// token_budget the newest wait a step; engines keep max_seqs <= token_budget). A decode at a block
// boundary needs a fresh block; without one the newest running sequence is preempted (maybe
// the one asking, then it does not decode this step).
void scheduler::plan_decodes(step_plan& plan) {
  auto& run = s_->running;
  for (std::size_t i = 0; i < run.size() && plan.tokens < o_.token_budget; ++i) {
    seq* q = run[i];
    if (!q->decoding) continue;
    if (q->computed / o_.block_size >= static_cast<int>(q->blocks.size())) {
      while (pool_.num_free() - s_->reserved <= 0 && q->running) preempt(run.back(), plan);
      if (!q->running) break;  // q was the newest: everything after it is gone too
      q->blocks.push_back(pool_.allocate());
    }
    add_chunk(q, 1, plan);
  }
}

step_plan scheduler::schedule() {
  step_plan plan;
  const int budget = o_.token_budget;
  auto& run = s_->running;
  if (o_.policy == sched_policy::split_fuse) {
    plan_decodes(plan);
    for (seq* q : run) {
      if (plan.tokens >= budget) break;
      if (!q->decoding)
        add_chunk(q, std::min(q->prefill - q->computed, budget - plan.tokens), plan);
    }
    // No admissions in a step that had to preempt (memory is tight: a new prompt would only be
    // preempted in turn), unless nothing else runs.
    bool admit_ok = plan.preempted.empty() || plan.chunks.empty();
    while (admit_ok && plan.tokens < budget && !s_->waiting.empty() && fits(s_->waiting.front())) {
      seq* q = s_->waiting.front();
      admit(q);
      add_chunk(q, std::min(q->prefill - q->computed, budget - plan.tokens), plan);
    }
  } else {
    if (run.empty())
      while (!s_->waiting.empty() && fits(s_->waiting.front())) admit(s_->waiting.front());
    bool prefilling = std::any_of(run.begin(), run.end(), [](seq* q) { return !q->decoding; });
    if (prefilling) {
      // Whole prompts only; the first one goes in even when it alone exceeds the budget.
      for (seq* q : run) {
        if (q->decoding) continue;
        int len = q->prefill - q->computed;
        if (!plan.chunks.empty() && plan.tokens + len > budget) break;
        add_chunk(q, len, plan);
      }
    } else {
      plan_decodes(plan);
    }
  }
  // After planning: a preemption above may have freed (and dropped copies aimed at) a block.
  plan.copies.swap(s_->pending);
  s_->pending.clear();
  return plan;
}

// The fork: ids[0] keeps the blocks; each other choice shares the full prompt blocks and gets
// a private copy of the last partial one (its decodes write there). The reserved blocks make
// the allocation certain.
void scheduler::fork(seq* q) {
  const int bs = o_.block_size;
  const int full = q->computed / bs, rows = q->computed % bs;
  auto at = std::find(s_->running.begin(), s_->running.end(), q) + 1;
  s_->reserved -= static_cast<int>(q->choices.size()) - 1;
  for (std::size_t i = 1; i < q->choices.size(); ++i) {
    seq* c = new_seq();
    c->id = q->choices[i];
    c->choices.assign(1, c->id);
    c->prefill = q->prefill;
    c->length = q->length + 1;
    c->computed = q->computed;
    c->running = c->decoding = true;
    c->tokens.clear();
    c->publishing = false;
    c->blocks.assign(q->blocks.begin(), q->blocks.begin() + full);
    for (int b : c->blocks) pool_.retain(b);
    if (rows > 0) {
      int b = pool_.allocate();
      if (b < 0) fail("scheduler: fork without its reserved block (internal error)");
      c->blocks.push_back(b);
      s_->pending.push_back({q->blocks[full], b, rows});
    }
    s_->by_id[c->id] = c;
    at = s_->running.insert(at, c) + 1;
  }
  q->choices.resize(1);
}

void scheduler::complete(const step_plan& plan) {
  for (const sched_chunk& c : plan.chunks) {
    auto it = s_->by_id.find(c.seq);
    if (it == s_->by_id.end()) continue;  // finished since the plan was made
    seq* q = it->second;
    if (!q->running || q->id != c.seq || c.start != q->computed || c.start + c.len > q->length)
      fail("scheduler: chunk of {} [{}, {}) does not match its state (computed {}, length {})",
           c.seq, c.start, c.start + c.len, q->computed, q->length);
    q->computed += c.len;
    if (q->publishing) publish(q);
    if (c.sample_for.empty()) continue;
    if (q->computed != q->length)
      fail("scheduler: chunk of {} samples before the end of its tokens", c.seq);
    if (q->choices.size() > 1) fork(q);
    q->length += 1;
    q->decoding = true;
  }
}

void scheduler::finish(uint64_t id) {
  auto it = s_->by_id.find(id);
  if (it == s_->by_id.end()) return;
  seq* q = it->second;
  s_->by_id.erase(it);
  if (q->choices.size() > 1) {
    // One choice of an unforked group leaves: the rest go on (under the next id if it was ids[0]).
    std::erase(q->choices, id);
    q->id = q->choices[0];
    if (q->running) {
      --s_->reserved;
      --s_->n_running;
    }
    return;
  }
  if (q->running) {
    unrun(q);
  } else {
    s_->waiting.erase(std::find(s_->waiting.begin(), s_->waiting.end(), q));
  }
  destroy(q);
}

std::span<const int> scheduler::blocks(uint64_t id) const {
  auto it = s_->by_id.find(id);
  if (it == s_->by_id.end() || it->second->id != id) return {};
  return it->second->blocks;
}

int scheduler::computed(uint64_t id) const {
  auto it = s_->by_id.find(id);
  return it == s_->by_id.end() ? 0 : it->second->computed;
}

int scheduler::length(uint64_t id) const {
  auto it = s_->by_id.find(id);
  return it == s_->by_id.end() ? 0 : it->second->length;
}

int scheduler::num_waiting() const {
  return static_cast<int>(s_->waiting.size());
}
int scheduler::num_running() const {
  return s_->n_running;
}

}  // namespace zf
