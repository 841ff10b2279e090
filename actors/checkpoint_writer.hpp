#pragma once
// checkpoint_writer: persists checkpoint requests (snapshots, so training goes on meanwhile) in
// the universal format. Detached: disk I/O never blocks the scheduler. What it runs is
// storage/checkpoint_commit.hpp: one data file per rank snapshot, written in parallel, then
// the multi-process commit protocol (this process leads it or follows it per the committer's
// group); the writer adds the run's fixed manifest fields. Each write's duration goes to the
// request's write_timing and, as span "write", to spans ("checkpoint_writer").
#include <string>

#include "actors/train_protocol.hpp"
#include "storage/checkpoint_commit.hpp"

namespace zf::actors {

// config_toml: the run configuration recorded in every manifest.
writer_actor spawn_checkpoint_writer(caf::actor_system& sys, storage::checkpoint_committer c,
                                     std::string config_toml, actor_spans spans = {});

}  // namespace zf::actors
