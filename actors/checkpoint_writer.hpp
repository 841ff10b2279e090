#pragma once
// checkpoint_writer: persists checkpoint jobs (snapshots, so training goes on meanwhile) in
// the universal format: data files written through io_uring in parallel, then the Cap'n Proto
// manifest committed atomically. Detached: disk I/O never blocks the scheduler.
//  - One process (thread ranks): `writers` threads each write a contiguous slice of the snapshot.
//  - A process group (SPMD): every process's writer writes the slices its ranks own (job->slices)
//    into the shared step folder and publishes its fragments on the rendezvous store; rank 0's
//    writer opens the folder first and commits once all fragments are in.
#include <memory>

#include "actors/protocol.hpp"
#include "runtime/comm.hpp"

namespace zf::actors {

struct writer_group {  // SPMD only
  std::shared_ptr<comm::kv_store> store;
  int rank = 0, world = 1;
};

writer_actor spawn_checkpoint_writer(caf::actor_system& sys, int writers = 1,
                                     writer_group group = {});

}  // namespace zf::actors
