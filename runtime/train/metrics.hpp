#pragma once
// One training step's figures, as the monitor prints them (progress line) and records them
// (one JSON object per line in metrics.jsonl).
#include <cstdint>
#include <string>
#include <vector>

namespace zf {

struct step_metrics {
  int step = 0;  // optimizer steps completed (1-based after the first step)
  int total_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  // fp16 (train.precision), in the JSON line only then: the loss scale after this step, the
  // steps skipped on overflow so far, and whether this one was.
  double loss_scale = 0;
  int64_t skipped_steps = 0;
  bool skipped = false;
  double tokens_per_s = 0, step_ms = 0;
  double elapsed_s = 0;                                     // since the run (or resume) started
  int64_t tokens = 0;                                       // tokens trained on so far
  double val_loss = -1;                                     // < 0: no evaluation at this step
  double param_bytes = 0, grad_bytes = 0, optim_bytes = 0;  // per rank
  double comm_bytes = 0;  // data-plane bytes rank 0 sent during this step
  int ranks = 1;
  // The console's stall figures: how long this step waited for its batches from the sampler
  // (summed over micro-batches; ~0 when prefetch kept up), and the duration of a checkpoint
  // write that finished during this step (< 0: none, and the JSON line has no such key).
  double data_wait_ms = 0;
  double ckpt_write_ms = -1;
  // Data efficiency (issue 13), in the JSON line only when in use: layer-tokens so far (tokens
  // times the layers that processed them), the seqlen curriculum's sequence length (0: none),
  // the pool curriculum's difficulty and metric (-1: none), and random-LTD's kept tokens of t
  // in each dropping layer (0: none dropped this step).
  int64_t layer_tokens = 0;
  int seqlen = 0;
  int pool_difficulty = -1;
  std::string pool_metric;
  bool pool_percentile = false;
  int ltd_keep = 0, ltd_t = 0, ltd_layers = 0;
  // MoE models (issue 15), in the JSON line only then: per MoE layer (moe_layers ids) the
  // fraction of token choices each expert received this step (before capacity drops); the
  // fraction of choices dropped, the balance and z-losses (mean over forwards, summed over
  // layers), the mean router entropy and the load imbalance (max over mean expert load, the
  // worst layer's), over this process's ranks.
  std::vector<int> moe_layers;
  std::vector<std::vector<double>> moe_load;
  double moe_dropped = 0, moe_balance = 0, moe_z_loss = 0, moe_entropy = 0, moe_imbalance = 0;
};

// Fills m's MoE figures from a step's merged routing figures (runtime/model/moe step_stats).
namespace moe {
struct step_stats;
}
void set_moe_figures(const moe::step_stats& s, step_metrics& m);

std::string to_json_line(const step_metrics& m);
// "step 120/600 | loss 5.8123 | lr 1.98e-03 | 2345 tok/s | ETA 3m12s", then the data
// efficiency figures in use ("| seqlen 64 | vocab_rarity p40 | ltd 96/128")
std::string progress_line(const step_metrics& m);
std::string format_duration(double seconds);

// Who watches a run as it goes: the progress line, a graph's metrics port, a console. Called
// from one thread at a time (the monitor's), in step order.
class train_observer {
 public:
  virtual ~train_observer() = default;
  virtual void metrics(const step_metrics& m) = 0;
  virtual void note(const std::string& text) = 0;  // a line of its own ("interrupted: ...")
  virtual void flush() {}                          // the run is over
};

// The live progress line on stderr: on a terminal (tty) rewritten in place, a validation step
// kept on its own line; otherwise one line every print_every steps, at each validation and at
// the last step. Notes end any open line and print on their own.
class progress_printer : public train_observer {
 public:
  progress_printer(bool tty, int print_every)
      : tty_(tty), every_(print_every < 1 ? 1 : print_every) {}
  void metrics(const step_metrics& m) override;
  void note(const std::string& text) override;
  void flush() override;

 private:
  bool tty_;
  int every_;
  bool line_open_ = false;  // a \r progress line is on screen
};

}  // namespace zf
