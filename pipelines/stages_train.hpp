#pragma once
// Training as a graph stage (pipelines/graph.hpp): the pretraining dataflow (sampler -> rank
// workers -> optimizer shards, checkpoint writer, monitor: pipelines/pipeline.hpp) run on a
// thread of its own, with ports for what other stages consume:
//   out weights (weights_update): the parameters every publish_every steps (RLHF's weight sync:
//                                 connect it to an engine stage's weights input)
//   out result  (train_result):   once, at the end; then the stage is done
#include <atomic>
#include <thread>

#include "pipelines/graph.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/stages_serve.hpp"

ZF_MESSAGE_NAME(zf::train_result, "train_result");

namespace zf::stages {

class train_stage : public stage {
 public:
  out_port<weights_update> weights = output<weights_update>("weights");
  out_port<train_result> result = output<train_result>("result");

  // o.stop and o.on_weights are the stage's own (the graph's stop ends training too).
  train_stage(run_config cfg, run_options o) : cfg_(std::move(cfg)), o_(std::move(o)) {}
  ~train_stage() override { stop(); }
  void start(stage_context& ctx) override;
  void stop() override;

 private:
  run_config cfg_;
  run_options o_;
  std::atomic<bool> stop_{false};
  std::thread th_;
};

}  // namespace zf::stages
