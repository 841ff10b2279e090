#pragma once
// data_sampler: serves batches of the train and validation splits by index. A batch is a pure
// function of (seed, index), so replies may be computed ahead and resume is exact. Busy spans
// (spans: "sampler"): batch per train batch built, val_batch per validation batch.
#include <memory>

#include "actors/train_protocol.hpp"
#include "storage/dataset.hpp"

namespace zf::actors {

sampler_actor spawn_data_sampler(caf::actor_system& sys,
                                 std::shared_ptr<const storage::dataset> data, uint64_t seed,
                                 int batch_size, actor_spans spans = {});

}  // namespace zf::actors
