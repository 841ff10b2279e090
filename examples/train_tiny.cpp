// train_tiny: a pretraining run composed in code with the pipeline DSL, on the embedded corpus.
// A very small GPT for a few steps, so it finishes in seconds on two cores; then a sample.
//   build/examples/train_tiny [out_dir]
#include <iostream>

#include "pipelines/pipeline.hpp"
#include "runtime/error.hpp"

int main(int argc, char** argv) {
  zf::run_config cfg;  // the embedded defaults, then a tiny model
  cfg.model.n_layer = 2;
  cfg.model.n_head = 2;
  cfg.model.n_embd = 64;
  cfg.model.n_positions = 64;
  cfg.train.steps = 30;
  cfg.train.batch_size = 4;
  cfg.train.seq_len = 64;
  cfg.train.warmup = 5;
  cfg.train.eval_every = 10;
  cfg.train.eval_batches = 2;
  cfg.train.sample_tokens = 16;

  zf::pipeline p(cfg);
  p.add(zf::stages::sampler{})                   // corpus -> batches
      .add(zf::stages::train{})                  // trainer, rank worker, optimizer shard
      .add(zf::stages::checkpoint{.every = 10})  // atomic checkpoints in the background
      .add(zf::stages::monitor{});               // progress line + metrics.jsonl

  zf::run_options o;
  o.out = argc > 1 ? argv[1] : "runs/train_tiny";
  o.resume = "";
  try {
    auto r = p.run(o);
    float first = r.losses.front(), last = r.losses.back();
    std::cout << "train_tiny: loss " << first << " -> " << last << " in " << r.final_step
              << " steps; checkpoint " << r.last_checkpoint << "\n";
    return last < first ? 0 : 1;
  } catch (const zf::error& e) {
    std::cerr << "train_tiny: " << e.what() << "\n";
    return 1;
  }
}
