#pragma once
// rank_worker: one per rank, detached (its own thread), owns the rank's model replica and runs
// forward/backward on it. Gradients accumulate in the model until zero_atom.
#include <memory>

#include "actors/protocol.hpp"

namespace zf::actors {

worker_actor spawn_rank_worker(caf::actor_system& sys, std::shared_ptr<gpt2_model> model);

}  // namespace zf::actors
