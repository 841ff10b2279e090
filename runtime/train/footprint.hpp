#pragma once
// What a training run will hold in memory, estimated from its configuration alone, and the check
// that refuses a run that cannot fit before anything is allocated or written: without it a
// `model.n_embd = 65536` run ended in a std::bad_alloc naming no key (or an out-of-memory kill),
// after its run folder had been started.
#include <cstdint>

#include "runtime/core/config.hpp"

namespace zf {

// Bytes held at once by the ranks of one process: local_ranks of the run's `world` ranks (thread
// ranks share a process; a process group has one each), at cfg.zero.stage.
struct train_footprint {
  double params = 0;       // full or owned, by ZeRO stage
  double grads = 0;        // full, owned accumulators, or both (stage 1)
  double moments = 0;      // AdamW exp_avg and exp_avg_sq, full or owned
  double buffers = 0;      // ZeRO gather / reduce buckets
  double copies = 0;       // the initial flat parameters at the start, or later one checkpoint
                           // snapshot (owned parameters and moments): the larger
  double activations = 0;  // one micro-batch (train.batch_size x train.seq_len), forward + backward
  double total() const { return params + grads + moments + buffers + copies + activations; }
};

// cfg must be valid (validate()).
train_footprint estimate_train_footprint(const run_config& cfg, int world, int local_ranks);

// zf::error when the footprint is above `available` bytes (machine_memory_bytes(),
// runtime/core/memory.hpp), naming the keys that make it large with their values, and the bytes
// needed and available. train.device = cuda: everything but the host copies must fit
// gpu_available (kernels::gpu_free_bytes()), the copies `available`.
void check_train_footprint(const run_config& cfg, int world, int local_ranks,
                           std::uint64_t available, std::uint64_t gpu_available = 0);

}  // namespace zf
