// train_tiny: a pretraining run as a graph: the training stage (sampler -> rank worker ->
// optimizer shard, checkpoints every 10 steps, progress line) and a stage of our own that
// receives its result. A very small GPT for a few steps, so it finishes in seconds on two cores.
//   build/examples/train_tiny [out_dir]
#include <iostream>

#include "pipelines/graph_run.hpp"
#include "pipelines/stages_train.hpp"

namespace {

// Prints the run's outcome; remembers whether the loss went down.
struct report : zf::stage {
  zf::in_port<zf::train_result> result = input<zf::train_result>("result");
  bool learned = false;
  void start(zf::stage_context& ctx) override {
    ctx.on(result, [this](const std::shared_ptr<const zf::train_result>& r) {
      const float first = r->losses.front(), last = r->losses.back();
      learned = last < first;
      std::cout << "train_tiny: loss " << first << " -> " << last << " in " << r->final_step
                << " steps; checkpoint " << r->last_checkpoint << "\n";
    });
  }
};

}  // namespace

int main(int argc, char** argv) try {
  zf::run_config cfg;  // the embedded defaults, then a tiny model
  cfg.model.n_layer = 2, cfg.model.n_head = 2, cfg.model.n_embd = 64, cfg.model.n_positions = 64;
  cfg.train.steps = 30, cfg.train.batch_size = 4, cfg.train.seq_len = 64, cfg.schedule.warmup = 5;
  cfg.eval.every = 10, cfg.eval.batches = 2, cfg.checkpoint.every = 10;
  cfg.train.sample_tokens = 16;  // a sample from the serving engine at the end
  zf::run_options o;
  o.out = argc > 1 ? argv[1] : "runs/train_tiny";

  zf::graph g;
  auto& train = g.add<zf::stages::train_stage>("train", cfg, o);
  auto& out = g.add<report>("report");
  g.connect(train.result, out.result);
  zf::run_graph(g);
  return out.learned ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "train_tiny: " << e.what() << "\n";
  return 1;
}
