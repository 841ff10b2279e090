#pragma once
// rank_worker: one per rank, detached (its own thread), runs forward/backward of its rank's
// zero_rank. Gradients accumulate until zero_atom; reduce_atom finishes the step's gradient
// reduction (collective). Busy spans (spans: "rank<global rank>"): forward_backward per
// micro-batch, evaluate per validation batch, reduce per step.
#include <memory>

#include "actors/train_protocol.hpp"

namespace zf::actors {

worker_actor spawn_rank_worker(caf::actor_system& sys, std::shared_ptr<zero_rank> rank,
                               actor_spans spans = {});

}  // namespace zf::actors
