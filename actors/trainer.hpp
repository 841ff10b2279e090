#pragma once
// trainer: the step loop. Per step: zero gradients on every rank, run grad_accum micro-batches
// (batches requested train.prefetch ahead from the sampler: credit-based prefetch), reduce the
// global gradient norm over the optimizer shards, clip, step every shard with the scheduled lr,
// report to the monitor, evaluate every eval_every steps and hand a snapshot to the checkpoint
// writer every checkpoint_every steps (one write in flight at a time; training continues while
// it is written). Stops early, with a checkpoint, when *stop becomes true (Ctrl-C).
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/protocol.hpp"

namespace zf::actors {

struct train_result {
  int first_step = 0, final_step = 0;             // optimizer steps completed at start and at end
  std::vector<float> losses;                      // train loss of each step run here
  std::vector<std::pair<int, float>> val_losses;  // (step, mean validation loss)
  std::string last_checkpoint;
  bool interrupted = false;
  std::string error;  // non-empty: the run failed with this message
};

struct trainer_setup {
  run_config cfg;
  std::string config_toml;
  param_layout layout;
  std::filesystem::path checkpoint_root;  // empty: no checkpoint stage
  int start_step = 0;
  std::vector<worker_actor> workers;
  std::vector<shard_actor> shards;
  sampler_actor sampler;
  writer_actor writer;    // may be invalid when checkpoint_root is empty
  monitor_actor monitor;  // may be invalid: no monitor stage
  std::atomic<bool>* stop = nullptr;
  int stop_at_step = 0;  // > 0: stop (as if interrupted, with a checkpoint) after this step
  std::shared_ptr<train_result> result;
  double param_bytes = 0, grad_bytes = 0, optim_bytes = 0;  // per rank, for the metrics
  int zero_stage = 0;
  // SPMD: this process is one rank of a multi-process group (each process runs a trainer over
  // its local rank; scalars are summed over the group's data plane; rank 0 reports and writes).
  bool spmd = false;
  int process_rank = 0, process_world = 1;
  std::function<uint64_t()> comm_bytes;  // rank 0's data-plane bytes so far (may be empty)
};

// Spawns the trainer (a blocking actor on its own thread); it ends when training ends.
caf::actor spawn_trainer(caf::actor_system& sys, trainer_setup setup);

}  // namespace zf::actors
