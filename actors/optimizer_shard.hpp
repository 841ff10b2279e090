#pragma once
// optimizer_shard: owns the fp32 AdamW moments of its slice [begin, end) of the flat parameter
// range and updates that slice of the model's parameters. Detached: an update of 124M floats is
// compute. With one rank the slice is the whole range.
#include <memory>

#include "actors/protocol.hpp"
#include "runtime/optim.hpp"

namespace zf::actors {

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<gpt2_model> model,
                                  std::shared_ptr<adamw> opt);

}  // namespace zf::actors
