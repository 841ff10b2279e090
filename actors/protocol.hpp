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
#include "runtime/zero.hpp"
#include "storage/dataset.hpp"

namespace zf::actors {

using batch_ptr = std::shared_ptr<const storage::batch>;

// Everything one checkpoint needs. The trainer allocates the flat arrays; every optimizer shard
// copies its persisted slices into them (disjoint ranges, so in parallel); then the writer
// persists the job while training goes on (the arrays are a snapshot, not the live weights).
struct checkpoint_job {
  std::filesystem::path root;  // the run's checkpoints/ folder
  int keep = 3;
  int step = 0;
  std::string config_toml;
  int world = 1, zero_stage = 0;  // how it was trained
  // SPMD: the flat ranges this process persists ({begin, length} pairs, from its shards); its
  // writer writes only those, and rank 0 commits once every process published its fragments.
  std::vector<uint64_t> slices;
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
using reduce_atom = caf::atom_constant<caf::atom("zf_reduce")>;   // worker: reduce gradients
using allsum_atom = caf::atom_constant<caf::atom("zf_allsum")>;   // worker: sum a scalar over ranks
using gnorm_atom = caf::atom_constant<caf::atom("zf_gnorm")>;     // shard: sum of squared grads
using apply_atom = caf::atom_constant<caf::atom("zf_apply")>;     // shard: optimizer step
using snapshot_atom = caf::atom_constant<caf::atom("zf_snap")>;   // shard: copy of its slice
using save_atom = caf::atom_constant<caf::atom("zf_save")>;       // writer: persist a job
using metrics_atom = caf::atom_constant<caf::atom("zf_metric")>;  // monitor: one step's figures
using note_atom = caf::atom_constant<caf::atom("zf_note")>;       // monitor: a line of text
using flush_atom = caf::atom_constant<caf::atom("zf_flush")>;     // monitor: flush and ack

}  // namespace zf::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::batch_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::checkpoint_job_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::step_metrics)

namespace zf::actors {

// data_sampler: deterministic batches by (global micro-batch index, rank): rank r gets rows
// [r*b, r*b+b) of the global batch, so N ranks see what one rank with batch N*b sees. Prefetch
// is the caller's credit (it keeps at most train.prefetch requests outstanding).
using sampler_actor =
    caf::typed_actor<caf::replies_to<train_atom, int64_t, int32_t>::with<batch_ptr>,
                     caf::replies_to<valid_atom, int64_t, int32_t>::with<batch_ptr>>;

// rank_worker: forward/backward on its rank; replies with the micro-batch's loss. fwdbwd,
// evaluate and reduce run collectives (ZeRO): the trainer sends them to every rank before
// waiting for any reply.
using worker_actor = caf::typed_actor<
    caf::replies_to<fwdbwd_atom, batch_ptr, float>::with<float>,
    caf::replies_to<evaluate_atom, batch_ptr>::with<float>, caf::replies_to<zero_atom>::with<bool>,
    caf::replies_to<reduce_atom>::with<bool>, caf::replies_to<allsum_atom, double>::with<double>>;

// optimizer_shard: owns its rank's AdamW state (1/N at stage >= 1); gnorm replies its share of
// the squared gradient norm, apply(lr, step, grad_scale) steps and all-gathers (collective),
// snapshot copies its persisted slices into the job's flat arrays.
using shard_actor = caf::typed_actor<
    caf::replies_to<gnorm_atom>::with<double>,
    caf::replies_to<apply_atom, double, int, float>::with<bool>,
    caf::replies_to<snapshot_atom, checkpoint_job_ptr>::with<std::vector<uint64_t>>>;

// checkpoint_writer: persists a job and replies with the committed folder.
using writer_actor =
    caf::typed_actor<caf::replies_to<save_atom, checkpoint_job_ptr>::with<std::string>>;

// monitor: progress line on the terminal, metrics.jsonl on disk.
using monitor_actor = caf::typed_actor<caf::reacts_to<metrics_atom, step_metrics>,
                                       caf::reacts_to<note_atom, std::string>,
                                       caf::replies_to<flush_atom>::with<bool>>;

}  // namespace zf::actors
