#pragma once
// The training step loop as a plain class: no actors, no threads of its own. Per step it zeroes
// the gradients of every rank, runs grad_accum micro-batches (asking the data source
// train.prefetch batches ahead per rank: credit-based prefetch), finishes the gradient
// reduction, sums the ranks' squared-norm shares, clips, steps every rank with the scheduled lr
// (fp16: the loss scaled by the loss scaler, the step skipped when the gradients overflowed),
// reports the step, evaluates every eval.every steps (and after the last), and asks for a
// checkpoint every checkpoint.every steps, after the last step and when stopping early. At most
// one checkpoint write is in flight: the next snapshot waits for it (the credit that bounds
// snapshot memory). It stops early, with a checkpoint, when *stop becomes true (Ctrl-C) or after
// stop_at_step.
//
// What it drives is behind three small interfaces, so the same loop runs over zero_ranks on
// threads (local_rank_group, the tests) and over CAF actors (actors/trainer.cpp):
//   rank_group    the ranks of this process; every call is collective over them
//   batch_source  train batches by (global micro-batch, global rank), validation batches
//   train_sink    metrics, notes and checkpoint requests
// Several processes (SPMD) each run a loop over their local ranks; losses and norm shares are
// summed over the group through rank_group::all_sum.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/batch.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/moe.hpp"
#include "runtime/train/data_schedule.hpp"
#include "runtime/train/loss_scaler.hpp"
#include "runtime/train/metrics.hpp"
#include "runtime/train/zero.hpp"

namespace zf {

// The ranks of this process. Every call runs on all of them at once (their collectives must
// meet) and returns when all are done; vectors are indexed by local rank.
class rank_group {
 public:
  virtual ~rank_group() = default;
  virtual int size() const = 0;
  virtual void zero_grad() = 0;
  // batches[r] on local rank r; loss_scale folds in 1 / (grad_accum * global ranks).
  virtual std::vector<float> forward_backward(const std::vector<batch_ptr>& batches,
                                              float loss_scale) = 0;
  virtual std::vector<float> evaluate(const std::vector<batch_ptr>& batches) = 0;
  virtual void reduce_gradients() = 0;
  virtual std::vector<double> grad_sq_norms() = 0;  // each rank's share
  virtual void step(double lr, int step, float grad_scale) = 0;
  // x summed over the processes of an SPMD group (one contribution per process).
  virtual double all_sum(double x) = 0;
  virtual std::vector<zero_snapshot_ptr> snapshot() = 0;
  // The step's MoE routing figures merged over this process's ranks (empty for a dense model).
  virtual moe::step_stats moe_stats() { return {}; }
};

// Batches are pure functions of their indices, so a source may prepare them ahead.
class batch_source {
 public:
  virtual ~batch_source() = default;
  // Starts preparing train batch (global micro-batch, global rank); answers come in order.
  virtual void request_train(int64_t micro, int rank) = 0;
  // The oldest requested train batch not yet taken.
  virtual batch_ptr take_train() = 0;
  // Validation batch `index` (the loop folds the rank into the index).
  virtual batch_ptr valid(int64_t index) = 0;
};

// What a checkpoint needs from training: copies of this process's ranks' slices and the
// state that resuming needs beyond the tensors.
struct checkpoint_request {
  int step = 0;  // optimizer steps completed
  int world = 1, zero_stage = 0;
  nlohmann::json state;
  std::vector<zero_snapshot_ptr> snapshots;  // one per local rank
};
using checkpoint_request_ptr = std::shared_ptr<const checkpoint_request>;

class train_sink {
 public:
  virtual ~train_sink() = default;
  virtual void metrics(const step_metrics& m) = 0;
  virtual void note(const std::string& text) = 0;
  // Starts writing a checkpoint and returns; the loop never has two in flight.
  virtual void checkpoint(checkpoint_request_ptr req) = 0;
  // Waits for the write in flight; returns the committed folder ("" where another process
  // commits).
  virtual std::string wait_checkpoint() = 0;
  // How long the latest write took (ms) once it has finished, or -1 while it runs (and where the
  // sink cannot tell). Never blocks: the loop polls it between steps, so a finished write is
  // waited for (at no cost) and reported in that step's metrics (ckpt_write_ms).
  virtual double checkpoint_write_ms() { return -1; }
  virtual void flush() {}  // the run is over
};

struct train_loop_options {
  train_config train;          // steps, batch, grad_accum, prefetch, seed
  optimizer_config optimizer;  // grad_clip and the peak lr of the schedule
  schedule_config schedule;
  checkpoint_config checkpoint;  // every (keep is the writer's)
  eval_config eval;
  int zero_stage = 0;  // recorded in checkpoints
  bool moe = false;    // an MoE model: each step's routing figures go into its metrics
  int start_step = 0;  // optimizer steps already done (resume)
  // The data-efficiency schedule (issue 13): tokens per step, the learning rate by tokens or
  // layer-tokens, the run's end by train.tokens, the metrics. Null: b x seq_len every step and
  // the step-based schedule (runtime/train/optim lr_at), as before.
  std::shared_ptr<const data_schedule> data_plan;
  // Tokens and layer-tokens consumed before start_step, as the resumed checkpoint recorded them
  // (< 0: counted from the schedule).
  int64_t start_tokens = -1, start_layer_tokens = -1;
  // fp16's loss scaler as the resumed checkpoint left it (state "loss_scaler"); null: fresh.
  std::shared_ptr<const loss_scaler_state> start_scaler;
  bool checkpoints = true;                  // false: never ask for one
  int process_rank = 0, process_world = 1;  // SPMD: this process among the group
  const std::atomic<bool>* stop = nullptr;  // true: stop after the current step
  int stop_at_step = 0;                     // > 0: stop (as if interrupted) after this step
  zero_memory memory;                       // per rank, for the metrics
  std::function<uint64_t()> comm_bytes;     // rank 0's data-plane bytes so far (may be empty)
  // Called after each step's metrics (steps completed so far), between steps: the ranks are
  // idle and hold that step's parameters (publishing weights to serving engines, RLHF's sync).
  std::function<void(int step)> after_step;
};

// A run's sections as the loop reads them (zero_stage from zero.stage; the rest left default).
train_loop_options loop_options_of(const run_config& c);

struct train_result {
  int first_step = 0, final_step = 0;             // optimizer steps completed at start and at end
  std::vector<float> losses;                      // train loss of each step run here
  std::vector<std::pair<int, float>> val_losses;  // (step, mean validation loss)
  std::string last_checkpoint;
  bool interrupted = false;
  std::string error;  // non-empty: the run failed with this message
};

class train_loop {
 public:
  train_loop(train_loop_options o, rank_group& ranks, batch_source& data, train_sink& sink);
  // Runs to train.steps or a stop. A failure (a non-finite loss, a rank's error) ends the run
  // with result.error set; it does not throw.
  train_result run();

 private:
  double train_step(int step);
  double evaluate();
  int end_step(int ranks) const;
  step_metrics step_figures(int step, double loss, double step_ms, int64_t step_tokens, int ranks);
  batch_ptr next_batch();
  void checkpoint(int step);
  void wait_for_writer();
  void poll_writer();
  bool checkpoint_due(int done, bool last, bool stopping) const;

  train_loop_options o_;
  rank_group& ranks_;
  batch_source& data_;
  train_sink& sink_;
  train_result r_;
  int local_ = 1;          // ranks of this process
  int64_t requested_ = 0;  // train batches asked for (numbered micro * local + local rank)
  int64_t taken_ = 0;      // of those, taken
  bool writing_ = false;
  double lr_ = 0, grad_norm_ = 0;
  int end_step_ = 0;                       // train.steps, or where train.tokens is reached
  int64_t tokens_ = 0, layer_tokens_ = 0;  // consumed before the current step (global)
  double data_wait_ms_ = 0;                // this step's wait for batches
  double ckpt_write_ms_ = -1;  // a write finished since the last step's metrics (-1: none)
  loss_scaler scaler_;         // fp16 (train.precision); off otherwise
  bool skipped_ = false;       // this step overflowed (fp16) and was skipped
};

}  // namespace zf
