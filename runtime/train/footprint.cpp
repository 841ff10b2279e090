#include "runtime/train/footprint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/memory.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/zero.hpp"

namespace zf {

// Mirrors what zero_rank allocates per stage (runtime/train/zero.cpp) and what the pipeline
// holds besides: the initial parameters as one flat copy while the ranks import them, and later
// the snapshot a checkpoint is written from.
train_footprint estimate_train_footprint(const run_config& cfg, int world, int local_ranks) {
  const model_spec spec = spec_of(cfg.model);
  const param_layout layout = make_layout(spec);
  const int stage = cfg.zero.stage;
  // expert slots: under expert parallelism a rank holds its experts only (stages 0-2)
  const int ep = spec.moe.any() && world > 1 ? cfg.train.expert_parallel : 1;
  const int slots = stage < 3 && world % ep == 0 ? ep : 1;
  const zero_partition part(layout, world, slots);
  const double P = double(layout.total), O = double(part.owned_size);
  const double H = double(part.held_size(0));  // every slot holds as much
  double params = stage == 3 ? O : H, grads = stage == 0 ? H : stage == 1 ? H + O : O;
  double moments = 2 * (stage == 0 ? H : O), buffers = 0;
  if (stage >= 1) buffers += double(part.max_chunk() + (stage == 2 ? part.max_split_piece() : 0));
  if (stage == 1 || stage == 3) buffers += double(part.max_bucket());
  if (stage >= 2) buffers += double(part.region_bucket(0) + part.max_block_bucket());
  const int b = cfg.train.batch_size, t = cfg.train.seq_len;
  const double acts = activation_floats(spec, b, t) +
                      (cfg.train.precision == "bf16" ? operand16_floats(spec, b, t) : 0.0);
  const double n = local_ranks, f = sizeof(float);
  train_footprint fp;
  fp.params = n * params * f;
  fp.grads = n * grads * f;
  fp.moments = n * moments * f;
  fp.buffers = n * buffers * f;
  fp.copies = std::max(P, n * 3 * O) * f;  // a snapshot holds owned parameters, m and v
  fp.activations = n * acts * f;
  return fp;
}

namespace {

// The keys behind the largest part of the footprint, with their values, for the message.
std::string keys_to_blame(const run_config& cfg, const train_footprint& fp, int local_ranks) {
  const model_config& m = cfg.model;
  const param_counts pc = count_params(spec_of(m));
  const double state = fp.total() - fp.activations;  // in proportion to the parameters
  auto kv = [](const char* key, int v) { return fmt::format("{} = {}", key, v); };
  std::vector<std::pair<double, std::string>> parts = {
      {state * pc.vocab / pc.total(),
       kv("model.vocab_size", m.vocab_size) + ", " + kv("model.n_embd", m.n_embd)},
      {state * pc.positions / pc.total(),
       kv("model.n_positions", m.n_positions) + ", " + kv("model.n_embd", m.n_embd)},
      {state * pc.blocks / pc.total(),
       kv("model.n_layer", m.n_layer) + ", " + kv("model.n_embd", m.n_embd) +
           (m.intermediate ? ", " + kv("model.intermediate", m.intermediate) : "")},
      {fp.activations, kv("train.batch_size", cfg.train.batch_size) + ", " +
                           kv("train.seq_len", cfg.train.seq_len)},
  };
  std::string keys = std::max_element(parts.begin(), parts.end())->second;
  if (local_ranks > 1) keys += ", " + kv("train.ranks", local_ranks);
  return keys;
}

}  // namespace

void check_train_footprint(const run_config& cfg, int world, int local_ranks,
                           std::uint64_t available, std::uint64_t gpu_available) {
  const train_footprint fp = estimate_train_footprint(cfg, world, local_ranks);
  if (cfg.train.device == "cuda") {  // the rank's state on the GPU, the copies on the host
    const double on_gpu = fp.total() - fp.copies;
    if (on_gpu > double(gpu_available))
      fail(
          "{}: training on the GPU needs about {} of GPU memory (parameters {}, gradients {}, "
          "AdamW moments {}, activations {}) but this GPU has {} free; make these smaller",
          keys_to_blame(cfg, fp, local_ranks), bytes_text(on_gpu), bytes_text(fp.params),
          bytes_text(fp.grads), bytes_text(fp.moments), bytes_text(fp.activations),
          bytes_text(double(gpu_available)));
    if (fp.copies > double(available))
      fail(
          "{}: the initial or checkpoint copy needs about {} of host memory but this machine has "
          "{}; make these smaller",
          keys_to_blame(cfg, fp, local_ranks), bytes_text(fp.copies),
          bytes_text(double(available)));
    return;
  }
  if (fp.total() <= double(available)) return;
  fail(
      "{}: training needs about {} of memory (parameters {}, gradients {}, AdamW moments {}, ZeRO "
      "buffers {}, initial or checkpoint copy {}, activations {}; {} rank(s) in this process, "
      "zero.stage {}) but this machine has {}; make these smaller",
      keys_to_blame(cfg, fp, local_ranks), bytes_text(fp.total()), bytes_text(fp.params),
      bytes_text(fp.grads), bytes_text(fp.moments), bytes_text(fp.buffers), bytes_text(fp.copies),
      bytes_text(fp.activations), local_ranks, cfg.zero.stage, bytes_text(double(available)));
}

}  // namespace zf
