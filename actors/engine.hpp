#pragma once
// The serving engine: a CAF actor that owns the model, the paged KV pool and the scheduler, and
// loops schedule -> execute (one ragged forward) -> update (sample, stop checks) -> stream out.
// make_engine wraps it behind serve::completion_backend, which the gateway, the CLI and
// bench/serve use.
#include <memory>

#include "runtime/lm_weights.hpp"
#include "runtime/serving.hpp"
#include "runtime/tokenizer.hpp"

namespace zf::actors {

struct engine_options {
  // split_fuse: Dynamic SplitFuse (decodes first, prompts chunked to fill the token budget).
  // static_batch: the baseline; whole prompts, a batch runs until all its sequences finish.
  enum class policy_kind { split_fuse, static_batch };
  policy_kind policy = policy_kind::split_fuse;
  int token_budget = 256;  // tokens per forward pass
  int max_seqs = 64;       // running sequences at most
  int block_size = 16;     // tokens per KV block
  int num_blocks = 0;      // KV blocks in the pool; 0: enough for max_seqs full contexts, capped
  int max_queue = 256;     // waiting requests at most; more get 429
  int threads = 0;         // compute threads; 0: all cores
  bool prefix_caching = true;  // share the KV blocks of prompt prefixes across requests
  // Every step under kernels::batch_invariant_scope: a sequence's logits and log-probs are the
  // same bits whatever batch, chunking or preemption it went through, and equal `zeroflow
  // score`'s (runtime/score under the same mode). Costs the speed of our own GEMM (bench/serve).
  bool batch_invariant = false;
};

// Serves weights as version 0; completion_backend::update_weights* swap in others of the same
// shape while serving (runtime/engine_core.hpp says what a swap does to running requests).
std::unique_ptr<serve::completion_backend> make_engine(lm_weights weights, tokenizer tok,
                                                       const engine_options& o);
std::unique_ptr<serve::completion_backend> make_engine(std::shared_ptr<const lm_weights> weights,
                                                       tokenizer tok, const engine_options& o);

}  // namespace zf::actors
