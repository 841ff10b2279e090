#pragma once
// Every message type and typed-actor interface of zeroflow, in one place.
// Control plane: CAF messages. Inside one process, tensors travel as handles (shared ownership,
// no copy); the data plane (runtime/comm) will carry them between processes. Handle types are
// local-only (CAF_ALLOW_UNSAFE_MESSAGE_TYPE); everything meant to cross processes is a plain
// value type.
//
// The training protocol is N-rank shaped: a trainer drives N rank_workers (one per rank) and N
// optimizer_shards (each owning 1/N of the flat parameter range). This issue runs N = 1.
#include <caf/all.hpp>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/metrics.hpp"
#include "runtime/model.hpp"
#include "storage/dataset.hpp"

namespace zf::actors {

using batch_ptr = std::shared_ptr<const storage::batch>;

// A copy of one optimizer shard's slice (parameters and Adam moments) at a step: the weights may
// go on changing while a checkpoint writer persists it.
struct shard_snapshot {
  std::size_t begin = 0, end = 0;  // slice of the flat parameter range, in floats
  fbuffer params, exp_avg, exp_avg_sq;
};
using snapshot_ptr = std::shared_ptr<shard_snapshot>;

// Everything one checkpoint needs, assembled by the trainer from the shards' snapshots.
struct checkpoint_job {
  std::filesystem::path root;  // the run's checkpoints/ folder
  int keep = 3;
  int step = 0;
  std::string config_toml;
  param_layout layout;
  fbuffer params, exp_avg, exp_avg_sq;  // full flat range
  nlohmann::json state;
};
using checkpoint_job_ptr = std::shared_ptr<checkpoint_job>;

// atoms (at most 10 characters each in CAF 0.17)
using train_atom = caf::atom_constant<caf::atom("zf_train")>;     // sampler: a train batch
using valid_atom = caf::atom_constant<caf::atom("zf_valid")>;     // sampler: a validation batch
using fwdbwd_atom = caf::atom_constant<caf::atom("zf_fwdbwd")>;   // worker: forward + backward
using evaluate_atom = caf::atom_constant<caf::atom("zf_eval")>;   // worker: forward only
using zero_atom = caf::atom_constant<caf::atom("zf_zero")>;       // worker: zero gradients
using gnorm_atom = caf::atom_constant<caf::atom("zf_gnorm")>;     // shard: sum of squared grads
using apply_atom = caf::atom_constant<caf::atom("zf_apply")>;     // shard: optimizer step
using snapshot_atom = caf::atom_constant<caf::atom("zf_snap")>;   // shard: copy of its slice
using save_atom = caf::atom_constant<caf::atom("zf_save")>;       // writer: persist a job
using metrics_atom = caf::atom_constant<caf::atom("zf_metric")>;  // monitor: one step's figures
using note_atom = caf::atom_constant<caf::atom("zf_note")>;       // monitor: a line of text
using flush_atom = caf::atom_constant<caf::atom("zf_flush")>;     // monitor: flush and ack

}  // namespace zf::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::batch_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::snapshot_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::checkpoint_job_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::step_metrics)

namespace zf::actors {

// data_sampler: deterministic batches by index; prefetch is the caller's credit (it keeps at
// most train.prefetch requests outstanding).
using sampler_actor = caf::typed_actor<caf::replies_to<train_atom, int64_t>::with<batch_ptr>,
                                       caf::replies_to<valid_atom, int64_t>::with<batch_ptr>>;

// rank_worker: forward/backward on its model replica; replies with the micro-batch's loss.
using worker_actor = caf::typed_actor<caf::replies_to<fwdbwd_atom, batch_ptr, float>::with<float>,
                                      caf::replies_to<evaluate_atom, batch_ptr>::with<float>,
                                      caf::replies_to<zero_atom>::with<bool>>;

// optimizer_shard: owns AdamW state for its slice; gnorm replies its slice's sum of squares,
// apply(lr, step, grad_scale) updates its slice of the parameters.
using shard_actor = caf::typed_actor<caf::replies_to<gnorm_atom>::with<double>,
                                     caf::replies_to<apply_atom, double, int, float>::with<bool>,
                                     caf::replies_to<snapshot_atom>::with<snapshot_ptr>>;

// checkpoint_writer: persists a job and replies with the committed folder.
using writer_actor =
    caf::typed_actor<caf::replies_to<save_atom, checkpoint_job_ptr>::with<std::string>>;

// monitor: progress line on the terminal, metrics.jsonl on disk.
using monitor_actor = caf::typed_actor<caf::reacts_to<metrics_atom, step_metrics>,
                                       caf::reacts_to<note_atom, std::string>,
                                       caf::replies_to<flush_atom>::with<bool>>;

}  // namespace zf::actors
