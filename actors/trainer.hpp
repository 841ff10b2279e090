#pragma once
// trainer: the shell around the step loop (runtime/train/train_loop.hpp). A typed, detached actor:
// on run_atom it runs the loop to the end on its own thread, driving the rank_workers,
// optimizer_shards, data_sampler, checkpoint_writer and monitor through their typed interfaces
// (actors/train_adapters.hpp), and replies with the train_result. It stops early, with a
// checkpoint, when *loop.stop becomes true (Ctrl-C).
#include <vector>

#include "actors/train_protocol.hpp"

namespace zf::actors {

struct trainer_setup {
  train_loop_options loop;            // cadences, stop conditions, SPMD place, memory figures
  std::vector<worker_actor> workers;  // one per local rank
  std::vector<shard_actor> shards;    // one per local rank, same order
  sampler_actor sampler;
  writer_actor writer;    // invalid: no checkpoint stage (no checkpoint is asked for)
  monitor_actor monitor;  // invalid: no monitor stage (notes go to stderr)
};

trainer_actor spawn_trainer(caf::actor_system& sys, trainer_setup setup);

}  // namespace zf::actors
