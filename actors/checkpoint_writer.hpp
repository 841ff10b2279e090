#pragma once
// checkpoint_writer: persists checkpoint jobs (snapshots, so training goes on meanwhile): `writers`
// threads write their slices of the state in parallel through io_uring, each into its own file,
// then the Cap'n Proto manifest is committed atomically. Detached: disk I/O never blocks the
// scheduler.
#include "actors/protocol.hpp"

namespace zf::actors {

writer_actor spawn_checkpoint_writer(caf::actor_system& sys, int writers = 1);

}  // namespace zf::actors
