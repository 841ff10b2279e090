#pragma once
// data_sampler: serves batches of the train and validation splits by index. A batch is a pure
// function of (seed, index), so replies may be computed ahead and resume is exact. The
// curriculum (issue 13) lives here: storage::train_batches shapes each batch by the run's data
// schedule, so shorter, easier or harder batches are ready before the trainer asks. Busy spans
// (spans: "sampler"): batch per train batch built, val_batch per validation batch.
#include <memory>

#include "actors/train_protocol.hpp"
#include "storage/train_batches.hpp"

namespace zf::actors {

sampler_actor spawn_data_sampler(caf::actor_system& sys,
                                 std::shared_ptr<const storage::train_batches> batches,
                                 actor_spans spans = {});

}  // namespace zf::actors
