#pragma once
// Training as graph stages (pipelines/graph.hpp). train_stage runs the pretraining dataflow
// (sampler -> rank workers -> optimizer shards, checkpoint writer: pipelines/pipeline.hpp) on a
// thread of its own, with ports for what other stages consume:
//   out weights (weights_update): the parameters every publish_every steps (RLHF's weight sync:
//                                 connect it to an engine stage's weights input)
//   out metrics (step_metrics):   every step's figures (rank 0 of a process group)
//   out notes   (train_note):     lines of text about the run ("interrupted: ...")
//   out result  (train_result):   once, at the end; then the stage is done
// With metrics unconnected the stage prints its own progress line (as `zeroflow train` did
// before it was a graph); metrics.jsonl in the run folder is written either way.
// monitor_stage is that progress line as a stage: in metrics, in notes (optional).
#include <atomic>
#include <memory>
#include <thread>

#include "pipelines/graph.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/stages_serve.hpp"
#include "runtime/train/metrics.hpp"

namespace zf {
struct train_note {
  std::string text;
};
}  // namespace zf

ZF_MESSAGE_NAME(zf::train_result, "train_result");
ZF_MESSAGE_NAME(zf::step_metrics, "step_metrics");
ZF_MESSAGE_NAME(zf::train_note, "train_note");

namespace zf::stages {

class train_stage : public stage {
 public:
  out_port<weights_update> weights = output<weights_update>("weights");
  out_port<step_metrics> metrics = output<step_metrics>("metrics");
  out_port<train_note> notes = output<train_note>("notes");
  out_port<train_result> result = output<train_result>("result");

  // o.stop, if given, is shared: setting it (Ctrl-C) stops training after the step, with a
  // checkpoint, and the result still goes out; the graph's stop sets it too. o.on_weights and
  // o.observer are the stage's own.
  train_stage(run_config cfg, run_options o) : cfg_(std::move(cfg)), o_(std::move(o)) {
    if (!o_.stop) o_.stop = &stop_;
  }
  ~train_stage() override { stop(); }
  void start(stage_context& ctx) override;
  void stop() override;

 private:
  run_config cfg_;
  run_options o_;
  std::atomic<bool> stop_{false};
  std::thread th_;
};

class monitor_stage : public stage {
 public:
  in_port<step_metrics> metrics = input<step_metrics>("metrics", true, true);
  in_port<train_note> notes = input<train_note>("notes", false, true);

  // tty: rewrite the line in place; else a line every print_every steps
  // (runtime/train/metrics.hpp). quiet: notes only.
  monitor_stage(bool tty, int print_every, bool quiet = false)
      : printer_(tty, print_every), quiet_(quiet) {}
  void start(stage_context& ctx) override;
  void inputs_closed(stage_context& ctx) override;

 private:
  progress_printer printer_;
  bool quiet_;
};

}  // namespace zf::stages
