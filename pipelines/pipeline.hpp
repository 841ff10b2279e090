#pragma once
// The pipeline DSL: a run is composed from stages and run as a dataflow graph of actors.
//
//   zf::pipeline p(cfg);
//   p.add(zf::stages::sampler{})          // data_sampler: corpus -> batches (credit prefetch)
//    .add(zf::stages::train{})            // trainer + rank_workers + optimizer_shards
//    .add(zf::stages::checkpoint{})       // checkpoint_writer (atomic, in the background)
//    .add(zf::stages::monitor{});         // progress line + metrics.jsonl
//   auto result = p.run({.out = "runs/tiny"});
//
// The graph is fixed in shape (sampler -> train -> {checkpoint, monitor}); a stage left out is
// simply not spawned (a run without `checkpoint` writes none). The CLI builds the same graph
// from TOML.
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "actors/trainer.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/text/tokenizer.hpp"
#include "runtime/train/metrics.hpp"

namespace zf {

namespace stages {
struct sampler {};
struct train {
  int ranks = 0;        // data-parallel ranks (threads); 0: train.ranks
  int zero_stage = -1;  // ZeRO stage 0..3; -1: zero.stage
};
struct checkpoint {
  int every = -1;  // -1: checkpoint.every
};
struct monitor {
  bool quiet = false;  // metrics.jsonl only, no progress line
};
}  // namespace stages

struct run_options {
  std::filesystem::path out = "runs/default";
  std::string resume;  // "", "latest", "auto" (latest if there is one) or a checkpoint folder
  std::atomic<bool>* stop = nullptr;  // set to true to stop after the current step
  int stop_at_step = 0;               // > 0: stop after this step, as an interrupt would
  bool print_sample = true;           // print a sample of the trained model at the end
  bool quiet = false;                 // no banner and no progress line (as stages::monitor)
  // Every publish_every steps (0: never), on_weights gets the parameters of that step as
  // inference weights (one process: thread ranks; the training waits while it runs).
  int publish_every = 0;
  std::function<void(int step, std::shared_ptr<const lm_weights> w)> on_weights;
  // Set: gets the metrics and notes in place of the progress line (a graph's monitor stage);
  // metrics.jsonl is written either way. Only the process that reports (rank 0) calls it.
  std::shared_ptr<train_observer> observer;
};

using train_result = actors::train_result;

class pipeline {
 public:
  explicit pipeline(run_config cfg) : cfg_(std::move(cfg)) {}
  pipeline& add(const stages::sampler& s);
  pipeline& add(const stages::train& s);
  pipeline& add(const stages::checkpoint& s);
  pipeline& add(const stages::monitor& s);
  // Validates the graph, prepares data and model, runs to the end (or *stop). zf::error on bad
  // input, before anything on disk is touched.
  train_result run(const run_options& o);
  const run_config& config() const { return cfg_; }

 private:
  run_config cfg_;
  std::optional<stages::sampler> sampler_;
  std::optional<stages::train> train_;
  std::optional<stages::checkpoint> checkpoint_;
  std::optional<stages::monitor> monitor_;
};

// The standard pretraining graph with every stage, as `zeroflow train` runs it.
pipeline pretrain(const run_config& cfg);

// The folder with the corpus and tokenizer files: data.data_dir, else $ZF_DATA_DIR, else the
// build's default (the source tree's data/).
std::filesystem::path data_dir(const run_config& cfg);

// A run's tokenizer (data.tokenizer: GPT-2's files from data_dir, or a folder / file with a
// Hugging Face tokenizer.json) and an id naming it in the corpus cache ("" for GPT-2).
std::pair<tokenizer, std::string> open_tokenizer(const run_config& cfg);
// That id alone (no tokenizer loaded): a CRC of the tokenizer.json text.
std::string tokenizer_id(const run_config& cfg);

}  // namespace zf
