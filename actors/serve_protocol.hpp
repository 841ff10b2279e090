#pragma once
// The serving area's messages and typed actor interfaces (train_protocol.hpp is training's,
// cluster_protocol.hpp the rendezvous'). All local to one process: handles, not data.
//   engine_actor: submit (a validated request), cancel, weights (a swap between two steps) and
//                 its own step messages; detached, it drives itself step by step.
//   loader_actor: load (a weights folder read off the engine's thread, then handed on).
#include <caf/all.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "runtime/core/config.hpp"
#include "runtime/serve/engine_core.hpp"
#include "runtime/serve/serving.hpp"

namespace zf::actors {

struct pending {
  uint64_t id = 0;
  serve::completion_request req;
  serve::event_sink sink;
  engine_core::clock::time_point arrival;
};
using pending_ptr = std::shared_ptr<pending>;

// One weight update on its way: loaded from path by the loader when weights is null. done is
// answered exactly once; a job dropped unanswered (the backend shut down) answers 503.
struct weights_job {
  std::shared_ptr<const lm_weights> weights;
  std::string path;
  std::optional<uint64_t> version;
  serve::weights_done done;
  const engine_core* core = nullptr;  // for the served version and the shape check
  void finish(int status, std::string message) {
    if (auto d = std::exchange(done, nullptr)) d({status, core->weights_version(), message});
  }
  ~weights_job() { finish(503, "the engine shut down before the weights were swapped"); }
};
using weights_job_ptr = std::shared_ptr<weights_job>;

using submit_atom = caf::atom_constant<caf::atom("zf_submit")>;
using cancel_atom = caf::atom_constant<caf::atom("zf_cancel")>;
using step_atom = caf::atom_constant<caf::atom("zf_step")>;
using weights_atom = caf::atom_constant<caf::atom("zf_weights")>;
using load_atom = caf::atom_constant<caf::atom("zf_load")>;

}  // namespace zf::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::pending_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::weights_job_ptr)

namespace zf::actors {

using engine_actor =
    caf::typed_actor<caf::reacts_to<submit_atom, pending_ptr>,
                     caf::reacts_to<cancel_atom, uint64_t>,
                     caf::reacts_to<weights_atom, weights_job_ptr>, caf::reacts_to<step_atom>>;
using loader_actor = caf::typed_actor<caf::reacts_to<load_atom, weights_job_ptr>>;

// The engine core's options for an `engine.*` configuration: the one place the policy name
// becomes a sched_policy (zf::error for an unknown one) and 0 threads all cores.
engine_core_options core_options_of(const engine_config& c);

// Spawned detached (each on its own thread) by the engine backend (actors/engine_backend.cpp).
engine_actor spawn_engine_actor(caf::actor_system& sys, engine_core* core, bool batch_invariant);
loader_actor spawn_loader_actor(caf::actor_system& sys, engine_actor engine);

}  // namespace zf::actors
