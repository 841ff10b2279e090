#pragma once
// monitor: DIR/metrics.jsonl (one JSON object per step, flushed as it goes) and the run's
// observer (by default the progress line, runtime/train/metrics.hpp).
#include <filesystem>
#include <memory>

#include "actors/train_protocol.hpp"

namespace zf::actors {

struct monitor_options {
  std::filesystem::path metrics_file;  // appended to
  // Gets every step's metrics and the notes; null: none (metrics file only). The notes then go
  // to stderr, so a stop or a failure is still said.
  std::shared_ptr<train_observer> observer;
};

monitor_actor spawn_monitor(caf::actor_system& sys, const monitor_options& o);

}  // namespace zf::actors
