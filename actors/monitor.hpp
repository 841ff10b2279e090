#pragma once
// monitor: DIR/metrics.jsonl (one JSON object per step, flushed as it goes), the run's observer
// (by default the progress line, runtime/train/metrics.hpp) and, when asked
// (`monitor.tensorboard`), a TensorBoard event file with the same scalars, tagged "train/<the
// metrics.jsonl key>" (runtime/monitor/tensorboard.hpp).
#include <filesystem>
#include <memory>

#include "actors/train_protocol.hpp"

namespace zf::actors {

struct monitor_options {
  std::filesystem::path metrics_file;  // appended to
  // Gets every step's metrics and the notes; null: none (metrics file only). The notes then go
  // to stderr, so a stop or a failure is still said.
  std::shared_ptr<train_observer> observer;
  // Not empty: also DIR/events.out.tfevents.*, each step's scalars written (flushed) as one write
  // when they come, as metrics.jsonl's line. A file that cannot be written is said once (a note)
  // and training goes on without it.
  std::filesystem::path tensorboard_dir;
};

monitor_actor spawn_monitor(caf::actor_system& sys, const monitor_options& o);

}  // namespace zf::actors
