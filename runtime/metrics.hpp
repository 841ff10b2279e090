#pragma once
// One training step's figures, as the monitor prints them (progress line) and records them
// (one JSON object per line in metrics.jsonl).
#include <cstdint>
#include <string>

namespace zf {

struct step_metrics {
  int step = 0;  // optimizer steps completed (1-based after the first step)
  int total_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, step_ms = 0;
  double elapsed_s = 0;                                     // since the run (or resume) started
  int64_t tokens = 0;                                       // tokens trained on so far
  double val_loss = -1;                                     // < 0: no evaluation at this step
  double param_bytes = 0, grad_bytes = 0, optim_bytes = 0;  // per rank
  double comm_bytes = 0;  // data-plane bytes rank 0 sent during this step
  int ranks = 1;
};

std::string to_json_line(const step_metrics& m);
// "step 120/600 | loss 5.8123 | lr 1.98e-03 | 2345 tok/s | ETA 3m12s"
std::string progress_line(const step_metrics& m);
std::string format_duration(double seconds);

}  // namespace zf
