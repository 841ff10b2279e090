#pragma once
// The serving engine: a CAF actor that owns the model, the paged KV pool and the scheduler, and
// loops schedule -> execute (one ragged forward) -> update (sample, stop checks) -> stream out.
// make_engine wraps it behind serve::completion_backend, which the gateway, the CLI and
// bench/serve use.
#include <memory>

#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/serve/serving.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::actors {

// Serves weights as version 0; completion_backend::update_weights* swap in others of the same
// shape while serving (runtime/serve/engine_core.hpp says what a swap does to running requests).
// The engine is configured by the run config's `engine.*` keys (runtime/core/config.hpp): policy
// split_fuse (Dynamic SplitFuse: decodes first, prompts chunked to fill the token budget) or
// static_batch (the baseline: whole prompts, a batch runs until all its sequences finish);
// kv_blocks 0 sizes the pool for max_seqs full contexts, capped; batch_invariant runs every step
// under kernels::batch_invariant_scope, so a sequence's logits and log-probs are the same bits
// whatever batch, chunking or preemption it went through, and equal `zeroflow score`'s (at the
// cost of the speed of our own GEMM: bench/serve).
std::unique_ptr<serve::completion_backend> make_engine(lm_weights weights, tokenizer tok,
                                                       const engine_config& c);
std::unique_ptr<serve::completion_backend> make_engine(std::shared_ptr<const lm_weights> weights,
                                                       tokenizer tok, const engine_config& c);

}  // namespace zf::actors
