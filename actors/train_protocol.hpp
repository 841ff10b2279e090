#pragma once
// The training area's control plane: every message and typed-actor interface of pretraining, in
// one place (the cluster's are actors/cluster_protocol.hpp; serving's engine and gateway do not
// exchange CAF messages yet). Inside one process tensors travel as handles (shared ownership,
// no copy); between processes they go over the data plane (runtime/dist/comm), never through CAF.
// Handle types are local-only (CAF_ALLOW_UNSAFE_MESSAGE_TYPE).
//
// The protocol is N-rank shaped: a trainer drives N rank_workers and N optimizer_shards (one
// each per rank of this process); what they compute is runtime/train/zero.hpp, the step loop that
// drives them is runtime/train/train_loop.hpp.
#include <atomic>
#include <caf/all.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/core/batch.hpp"
#include "runtime/monitor/span_log.hpp"
#include "runtime/train/metrics.hpp"
#include "runtime/train/train_loop.hpp"
#include "runtime/train/zero.hpp"

namespace zf::actors {

using zf::batch_ptr;
using zf::checkpoint_request_ptr;
using zf::train_result;
using zf::zero_snapshot_ptr;

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
using snapshot_atom = caf::atom_constant<caf::atom("zf_snap")>;   // shard: copy of its slices
using moe_atom = caf::atom_constant<caf::atom("zf_moe")>;         // worker: the step's MoE figures
using save_atom = caf::atom_constant<caf::atom("zf_save")>;       // writer: persist a checkpoint
using metrics_atom = caf::atom_constant<caf::atom("zf_metric")>;  // monitor: one step's figures
using note_atom = caf::atom_constant<caf::atom("zf_note")>;       // monitor: a line of text
using flush_atom = caf::atom_constant<caf::atom("zf_flush")>;     // monitor: flush and ack
using run_atom = caf::atom_constant<caf::atom("zf_run")>;         // trainer: train to the end

// Where a training actor records its busy spans: the run's spans.jsonl (the console's timeline),
// on the row `actor` ("rank0", "optimizer0", "sampler", "checkpoint_writer"). A null log records
// nothing (tests, runs without a monitor). One span per message handled, never per layer: an add
// is a buffered append under a mutex.
struct actor_spans {
  std::shared_ptr<monitor::span_log> log;
  std::string actor;
  // f(), recorded as span `what` when it returns (a throw records nothing and passes through).
  template <class F>
  auto timed(std::string_view what, F&& f) const {
    if (!log) return f();
    const auto t0 = monitor::span_log::clock::now();
    auto out = f();
    log->add(actor, what, t0, monitor::span_log::clock::now());
    return out;
  }
};

// How long a checkpoint write took (ms), stored by the checkpoint_writer when it is over; -1
// until then. The trainer reads it between steps without waiting for the reply (the step's
// metrics say when a write finished: ckpt_write_ms).
struct write_timing {
  std::atomic<double> ms{-1};
};
using write_timing_ptr = std::shared_ptr<write_timing>;

}  // namespace zf::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::batch_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::checkpoint_request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::zero_snapshot_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::step_metrics)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::train_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::write_timing_ptr)

namespace zf::actors {

// data_sampler: deterministic batches by (global micro-batch index, global rank): rank r gets
// rows [r*b, r*b+b) of the global batch, so N ranks see what one rank with batch N*b sees.
// Validation batches by index (the caller folds the rank into it). Prefetch is the caller's
// credit (it keeps at most train.prefetch requests per rank outstanding).
using sampler_actor =
    caf::typed_actor<caf::replies_to<train_atom, int64_t, int32_t>::with<batch_ptr>,
                     caf::replies_to<valid_atom, int64_t>::with<batch_ptr>>;

// rank_worker: forward/backward on its rank; replies with the micro-batch's loss. fwdbwd,
// evaluate, reduce and allsum run collectives (ZeRO): the trainer sends them to every rank
// before waiting for any reply.
using worker_actor = caf::typed_actor<
    caf::replies_to<fwdbwd_atom, batch_ptr, float>::with<float>,
    caf::replies_to<evaluate_atom, batch_ptr>::with<float>, caf::replies_to<zero_atom>::with<bool>,
    caf::replies_to<reduce_atom>::with<bool>, caf::replies_to<allsum_atom, double>::with<double>,
    caf::replies_to<moe_atom>::with<std::vector<double>>>;

// optimizer_shard: owns its rank's AdamW state (1/N at stage >= 1); gnorm replies its share of
// the squared gradient norm, apply(lr, step, grad_scale) steps and all-gathers (collective),
// snapshot replies a copy of the slices the rank persists.
using shard_actor = caf::typed_actor<caf::replies_to<gnorm_atom>::with<double>,
                                     caf::replies_to<apply_atom, double, int, float>::with<bool>,
                                     caf::replies_to<snapshot_atom>::with<zero_snapshot_ptr>>;

// checkpoint_writer: persists a checkpoint request (its snapshots), stores the write's duration
// in the write_timing (may be null) and replies with the committed folder ("" in a process that
// is not the group's leader).
using writer_actor = caf::typed_actor<
    caf::replies_to<save_atom, checkpoint_request_ptr, write_timing_ptr>::with<std::string>>;

// monitor: progress line on the terminal, metrics.jsonl on disk.
using monitor_actor = caf::typed_actor<caf::reacts_to<metrics_atom, step_metrics>,
                                       caf::reacts_to<note_atom, std::string>,
                                       caf::replies_to<flush_atom>::with<bool>>;

// trainer: runs the step loop over the actors above when asked, and replies with the outcome
// (a failure is result.error, not a CAF error).
using trainer_actor = caf::typed_actor<caf::replies_to<run_atom>::with<train_result>>;

}  // namespace zf::actors
