#pragma once
// One micro-batch of token windows: what a data source hands the ranks. A pure value, shared
// read-only between the sampler and a rank (no copy inside one process).
#include <cstdint>
#include <memory>
#include <vector>

namespace zf {

struct token_batch {
  int64_t index = 0;  // which batch of its split
  int b = 0, t = 0;
  std::vector<int> inputs, targets;  // [b, t] each
  // random-LTD (issue 13): tokens each sequence keeps in the dropping layers (0: none drop) and
  // the seed of the kept positions' draw (runtime/model/token_drop).
  int ltd_keep = 0;
  uint64_t ltd_seed = 0;
  // MoE router jitter's draw for this micro-batch: the same on every rank of a step (the rows are
  // told apart by their place in the step's batch), so ranks and a resumed run draw alike.
  uint64_t route_seed = 0;
};
using batch_ptr = std::shared_ptr<const token_batch>;

}  // namespace zf
