#pragma once
// Step scheduler of the serving engine: pure bookkeeping, no model, no threads. It decides which
// tokens of which sequences the next forward pass computes, and owns every sequence's block
// table (blocks come from a block_pool). Its step_plan is the only thing the engine hands to the
// model.
//
// A sequence's token stream is its prompt followed by the tokens it generated. `computed` counts
// the leading tokens whose K/V are in the cache. A chunk asks the model to compute tokens
// [start, start + len) of one sequence (start == computed): a prefill chunk (part of the prompt)
// or a decode (len 1: the last generated token). Only a chunk that reaches the end of the
// sequence's known tokens samples: its last row's logits give the next token for every id in
// `sample_for` (normally just the sequence; a group's n choices after their shared prompt).
//
// Policies:
//   split_fuse (Dynamic SplitFuse, DeepSpeed-FastGen): every step has a token budget. Running
//     decodes go first (one token each). The rest of the budget goes to prompts in arrival order:
//     sequences admitted earlier whose prompt is not finished continue first, then waiting
//     requests are admitted while running < max_seqs and their whole prompt fits in free blocks.
//     A long prompt is split into chunks across steps; short ones are packed together so the
//     step is full.
//   static_batch (baseline): when nothing runs, admit waiting requests in arrival order (up to
//     max_seqs, while their prompts fit) as one batch; prefill whole prompts (a step holds whole
//     prompts up to the budget, at least one even if it is longer); then decode the batch every
//     step until all of it has finished; only then admit the next batch.
//
// Blocks: admission allocates blocks for the whole prompt (a group also reserves one block per
// extra choice for the copy-on-write of the prompt's last partial block). A decode that needs a
// new block takes one from the pool; when none is free the most recently admitted running
// sequence is preempted: its blocks are released, computed goes back to 0, and it returns to
// the front of the waiting queue with its generated tokens now part of what it must prefill
// (recompute). A group is preempted as a whole only before its fork; after the fork each choice
// is an ordinary sequence.
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "runtime/serve/kv_cache.hpp"

namespace zf {

enum class sched_policy { split_fuse, static_batch };

struct sched_options {
  sched_policy policy = sched_policy::split_fuse;
  int token_budget = 256;  // tokens per step (>= 1)
  int max_seqs = 64;       // running sequences at most (a group of n counts n)
  int block_size = 16;
  bool prefix_caching = false;  // the pool must then be built with cache_block_size = block_size
};

struct sched_chunk {
  uint64_t seq = 0;  // whose blocks and positions
  int start = 0;     // first token position computed (== the sequence's computed before the step)
  int len = 0;       // tokens computed
  std::vector<uint64_t> sample_for;  // empty: no sampling (a non-final prefill chunk)
};

struct block_copy {
  int src = 0, dst = 0, rows = 0;  // kv_storage::copy_block(src, dst, rows), before the forward
};

struct step_plan {
  std::vector<sched_chunk> chunks;  // decodes first, then prefill chunks
  std::vector<block_copy> copies;   // do these before running the chunks
  std::vector<uint64_t> preempted;  // sequences preempted while planning (informational)
  int tokens = 0;                   // sum of chunk lengths
  bool empty() const { return chunks.empty(); }
};

class scheduler {
 public:
  scheduler(const sched_options& o, block_pool& pool);

  // Queues a request (FIFO): `ids` are its n >= 1 choices (n > 1: they share the prompt, which
  // is prefilled once under ids[0]; at the fork each choice gets the shared full blocks and its
  // own copy of the last partial one). Ids must be unique and not in use.
  // Throws zf::error (the engine answers 400) when the request could never be admitted: its
  // prompt needs more blocks than the whole pool ("prompt of N tokens needs B blocks but the
  // pool has only M"; a group counts its n - 1 reserved blocks) or n > max_seqs. The pool
  // should hold at least one sequence of the full context length: a sequence that alone grows
  // past the pool is preempted and can then never be readmitted.
  void add(std::span<const uint64_t> ids, int prompt_len);
  // The same with the prompt's tokens, which prefix caching needs: at admission the prompt's
  // leading full blocks found in the pool's cache are shared instead of computed (at least
  // the last prompt token is always computed, so the prefill samples), and as prefill fills a
  // block of known tokens it is published for later requests.
  void add(std::span<const uint64_t> ids, std::span<const int> prompt);

  // The next step's work (empty when there is nothing to do). Allocates blocks as needed.
  step_plan schedule();

  // After the forward pass of `plan`: every chunk's tokens are now computed; each id in a
  // chunk's sample_for got one new token appended (forks happen here; their copies were
  // planned in `plan.copies` of the NEXT schedule() call, before any of them writes).
  void complete(const step_plan& plan);

  // Preempts every running sequence for recompute, between steps (after a weight update their
  // K/V are stale): newest first, so they wait at the queue's front in admission order. Returns
  // how many were preempted.
  int preempt_all();

  // Ends a sequence at any time between steps (finished, stopped or cancelled): frees its
  // blocks (shared ones when their last user goes) and forgets it. A waiting group is removed
  // when all its ids are finished. Unknown ids are ignored.
  void finish(uint64_t id);

  // Block table of a running sequence (or of a group's ids[0] before the fork; the group's
  // other ids own no blocks yet and get an empty table, so summing references over all ids
  // gives every block's refcount). Empty for waiting and unknown ids. If ids[0] finishes
  // before the fork, the group goes on under its next unfinished id (chunks name that id).
  std::span<const int> blocks(uint64_t id) const;
  // A group's ids share these before the fork; unknown ids give 0. A decoding sequence has
  // computed == length - 1 (its last sampled token is what the next decode computes).
  int computed(uint64_t id) const;  // tokens with K/V in the cache
  int length(uint64_t id) const;    // prompt + generated tokens

  int num_waiting() const;  // requests (groups) not yet admitted
  int num_running() const;  // admitted sequences
  // Prompt tokens looked up in the prefix cache at admission, and how many were found.
  uint64_t cache_queries() const { return cache_queries_; }
  uint64_t cache_hits() const { return cache_hits_; }
  bool idle() const { return num_waiting() == 0 && num_running() == 0; }
  const sched_options& options() const { return o_; }

 private:
  struct seq;
  sched_options o_;
  block_pool& pool_;
  // implementation-defined members
  struct state;
  std::unique_ptr<state> s_;
  uint64_t cache_queries_ = 0, cache_hits_ = 0;
  seq* new_seq();
  void destroy(seq* q);
  void drop_blocks(seq* q);
  void unrun(seq* q);
  void preempt(seq* q, step_plan& plan);
  bool fits(seq* q);
  void match(seq* q);
  void publish(seq* q);
  void admit(seq* q);
  void add_chunk(seq* q, int len, step_plan& plan);
  void plan_decodes(step_plan& plan);
  void fork(seq* q);

 public:
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;
};

}  // namespace zf
