#pragma once
// monitor: the live progress line (rewritten in place on a terminal, one line per report
// otherwise) and DIR/metrics.jsonl (one JSON object per step, flushed as it goes).
#include <filesystem>

#include "actors/train_protocol.hpp"

namespace zf::actors {

struct monitor_options {
  std::filesystem::path metrics_file;  // appended to
  bool tty = false;                    // stderr is a terminal: rewrite the line in place
  int print_every = 1;                 // when not a tty, print every k-th step
  bool quiet = false;                  // metrics file only
};

monitor_actor spawn_monitor(caf::actor_system& sys, const monitor_options& o);

}  // namespace zf::actors
