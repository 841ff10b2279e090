#pragma once
// ZeRO data parallelism for one rank: partition math and the per-stage step.
//
// Every parameter region (runtime/model/model.hpp: embeddings, each block, ln_f) is split evenly
// across the `world` ranks, padded to world * chunk floats; rank r owns chunk r of every region,
// packed one after another into its "owned" buffers. Under MoE expert parallelism at stages 0-2,
// a rank holds only its expert slot's experts, split over the slot's replicas instead
// (runtime/train/zero_partition.hpp: "pieces"); "every rank" below means every holder. Stages:
//   0  plain data parallel: full params, grads and AdamW state on every rank; grads all-reduced.
//   1  + AdamW state sharded: grads reduce-scattered per region after backward, each rank steps
//      its chunks of the full params, the updated chunks are all-gathered.
//   2  + gradients sharded: backward accumulates a region into a transient bucket; releasing the
//      region reduce-scatters it into the rank's owned gradient (while backward goes on with the
//      next region). Only 1/N of the gradients persists.
//   3  + parameters sharded: a region's parameters are all-gathered into a transient bucket just
//      before use and dropped after; only the owned 1/N persists.
// Summation order is fixed by the communicator (rank order), so every rank holds identical
// parameters after each step at every stage.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "runtime/core/batch.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/dist/subgroup.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/optim.hpp"
#include "runtime/train/zero_partition.hpp"

namespace zf {

struct zero_slice {  // a flat range [flat_begin, flat_begin + len) of the layout
  std::size_t flat_begin, len;
};

// A copy of what one rank persists in a checkpoint: its persisted() slices packed one after
// another. A copy, so the write goes on while training does; only the rank's share, so no
// process ever holds the full state to checkpoint it (at any stage).
struct zero_snapshot {
  int rank = 0;  // the rank in its communicator (names its data file)
  std::vector<zero_slice> slices;
  fbuffer params, exp_avg, exp_avg_sq;  // [sum of the slices' lengths] each
};
using zero_snapshot_ptr = std::shared_ptr<const zero_snapshot>;

// Fills [begin, end) of the flat layout into whichever of the outputs are non-null (each
// [end - begin] floats). A checkpoint loader (storage/zero_checkpoint.hpp) implements it.
using zero_state_reader = std::function<void(std::size_t begin, std::size_t end, float* params,
                                             float* exp_avg, float* exp_avg_sq)>;

struct zero_memory {                                        // bytes held by one rank
  double param_bytes = 0, grad_bytes = 0, optim_bytes = 0;  // persistent
  double bucket_bytes = 0;                                  // transient gather/reduce buckets
};

// train.device as the ranks' device; zf::error naming train.device when it is cuda and this
// process cannot use one (a build without CUDA, no GPU, unless CUDA is simulated).
device device_of(const train_config& t);

namespace detail {
class comm_moe_group;  // zero.cpp: moe::group over the communicator
}

class zero_rank {
 public:
  // comm is not owned and must outlive this object; all ranks construct with the same config.
  // Parameters start from the seed's initialisation (identical on every rank).
  // where (train.device): cpu, or cuda: the model, its gradients and the AdamW moments in this
  // rank's GPU memory (kernels/device.hpp), checkpoints and exports copied through the host. cuda
  // runs one rank at stage 0 for now (zf::error naming train.device otherwise): ZeRO stages 1-3
  // and data parallelism over NCCL on GPUs are not wired yet.
  zero_rank(const model_spec& m, const optimizer_config& t, int stage, comm::communicator& comm,
            device where = device::cpu);
  device where() const { return where_; }
  ~zero_rank();

  // MoE models over several ranks route each training step over all of them (the one-rank
  // model's numbers on the concatenated batch); expert parallelism ep (train.expert_parallel):
  // rank r computes experts [(r % ep) E / ep, +E / ep) of every MoE layer for the tokens of
  // ranks [r - r % ep, +ep), exchanged by all_to_all (runtime/model/moe_parallel). zf::error
  // naming train.expert_parallel when ep does not divide the ranks or a layer's experts. At
  // stages 0-2 with ep > 1 the rank then holds only its experts (their parameters, gradients
  // and AdamW state; the other experts' pages of the flat buffers are never touched), so call it
  // before loading or importing state. Evaluation forwards route over the group too (every rank
  // evaluates in lockstep, as it trains).
  void set_expert_parallel(int ep);

  // Gradients travel and are summed in bf16 between the ranks (train.reduce_dtype = bf16:
  // comm::communicator::reduce_scatter_bf16 / all_reduce_bf16, half the bytes) instead of fp32.
  // The optimizer still steps fp32 gradients and master weights.
  void set_reduce_bf16(bool on) { reduce_bf16_ = on; }
  bool reduce_bf16() const { return reduce_bf16_; }

  int stage() const { return stage_; }
  int rank() const { return comm_.rank(); }
  transformer& model() { return *model_; }
  const zero_partition& partition() const { return part_; }

  void zero_grad();
  // ids, targets: [b, t] of this rank; loss_scale folds in 1 / (grad_accum * world).
  float forward_backward(const int* ids, const int* targets, int b, int t, float loss_scale);
  // One micro-batch as the data source shaped it: random-LTD over the ltd layers when the batch
  // says to keep fewer than its t tokens (batch.ltd_keep, drawn from batch.ltd_seed).
  float forward_backward(const token_batch& batch, float loss_scale);
  // The layers random-LTD drops tokens in (train.random_ltd, resolved by data_schedule).
  void set_ltd_layers(std::vector<int> layers) { ltd_layers_ = std::move(layers); }
  float forward(const int* ids, const int* targets, int b, int t);
  // After the last micro-batch: stage 0 all-reduces, stage 1 reduce-scatters; 2, 3 nothing.
  void reduce_gradients();
  // This rank's share of the global squared gradient norm (sum over ranks = the global value).
  double grad_sq_norm() const;
  // AdamW on the owned part, the MoE routing biases' load-driven move (model.moe.
  // bias_update_rate), then (stages 1, 2) all-gather the updated parameters.
  void step(double lr, int step, float grad_scale);

  // Sum of x over every rank of the communicator (collective; the control values of SPMD runs:
  // loss, gradient norm share, validation loss).
  double all_sum(double x);
  void all_sum(float* data, std::size_t n);
  int world() const { return comm_.world(); }

  zero_memory memory() const;
  uint64_t bytes_communicated() const { return comm_.bytes_sent(); }
  void reset_bytes_communicated() { comm_.reset_bytes(); }

  // Checkpoint support. The flat ranges this rank persists: its owned chunk of every region, at
  // every stage (at stage 0 every rank holds everything, so the N ranks split the writing).
  using slice = zero_slice;
  std::vector<slice> persisted() const;
  // Copies of the persisted() ranges' parameters and moments (what a checkpoint writes).
  zero_snapshot snapshot() const;
  // Loads this rank's state through `read`, range by range, straight into its own buffers:
  // what it holds in full (parameters at stages 0-2, moments at stage 0) in one read, its
  // owned chunks otherwise; no full flat copy at any stage. moments = false: a weights-only
  // checkpoint (AdamW starts from zero).
  void load_state(const zero_state_reader& read, bool moments);
  // Copies params/exp_avg/exp_avg_sq of persisted() ranges into full flat arrays (sized total);
  // exp_avg / exp_avg_sq may be null. For callers that need the whole model in one place (the
  // end-of-run sample, tests); checkpoints use snapshot().
  void export_state(float* params, float* exp_avg, float* exp_avg_sq) const;
  // Loads this rank's view from full flat arrays (any world/stage wrote them); moments may be
  // null. For a model that exists only as a full flat array (initialisation, a Hugging Face
  // folder); checkpoints load through load_state().
  void import_state(const float* params, const float* exp_avg, const float* exp_avg_sq);

 private:
  void configure(int slots);  // the partition, optimizer ranges and buffers for `slots`
  void update_router_biases();
  // A piece's reduce-scatter / all-gather over its holders (comm_, or the slot's replicas).
  void reduce_scatter(const zero_piece& p, const float* in, float* out);
  void all_gather(const zero_piece& p, const float* in, float* out);
  void all_reduce_held(float* grads);  // stage 0
  struct param_gather;
  struct grad_scatter;
  struct chunk_state {  // where region i's owned chunk lives in this rank's buffers
    float *params, *exp_avg, *exp_avg_sq;
  };
  chunk_state owned_state(const zero_piece& p) const;

  model_spec spec_;
  optimizer_config opt_config_;
  int stage_;
  device where_;
  comm::communicator& comm_;
  zero_partition part_;
  std::unique_ptr<detail::comm_moe_group> moe_group_;  // MoE models over several ranks
  std::unique_ptr<comm::subgroup> slot_comm_;          // this rank's expert slot's replicas
  std::vector<region> held_;  // stages 0-2: the flat ranges held in full (merged pieces)
  std::unique_ptr<transformer> model_;
  std::unique_ptr<adamw> opt_;
  fbuffer owned_params_;                    // stage 3
  fbuffer owned_grads_;                     // stages 1-3
  fbuffer bucket_, tmp_chunk_, piece_buf_;  // piece_buf_: a piece of a multi-piece region
  std::unique_ptr<param_gather> pg_;
  std::unique_ptr<grad_scatter> gs_;
  std::vector<int> ltd_layers_;
  bool reduce_bf16_ = false;
};

}  // namespace zf
