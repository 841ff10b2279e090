#pragma once
// optimizer_shard: owns its rank's fp32 AdamW state (its 1/N partition at ZeRO stage >= 1) and
// steps its rank's parameters. Detached: an update of 124M floats is compute, and apply runs the
// all-gather collective. Busy spans (spans: "optimizer<global rank>"): grad_norm, step and
// snapshot, one per message.
#include <memory>

#include "actors/train_protocol.hpp"

namespace zf::actors {

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<zero_rank> rank,
                                  actor_spans spans = {});

}  // namespace zf::actors
