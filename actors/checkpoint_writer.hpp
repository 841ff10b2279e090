#pragma once
// checkpoint_writer: persists checkpoint jobs (copies, so training goes on meanwhile) with an
// atomic commit. Detached: disk I/O never blocks the scheduler.
#include "actors/protocol.hpp"

namespace zf::actors {

writer_actor spawn_checkpoint_writer(caf::actor_system& sys);

}  // namespace zf::actors
