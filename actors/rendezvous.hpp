#pragma once
// The rank table on the control plane: rank 0 hosts a key-value actor published on
// MASTER_ADDR:MASTER_PORT; every rank reaches it as a CAF remote actor. The data-plane backend
// (Gloo) rendezvouses through it, so tensors never touch CAF.
#include <caf/all.hpp>
#include <chrono>
#include <memory>

#include "runtime/core/launch.hpp"
#include "runtime/dist/comm.hpp"

namespace zf::actors {

// Needs an actor system with the io::middleman loaded. zf::error (naming the address) when the
// master cannot be reached within timeout.
std::shared_ptr<comm::kv_store> open_rendezvous(caf::actor_system& sys, const process_env& env,
                                                std::chrono::seconds timeout);

}  // namespace zf::actors
