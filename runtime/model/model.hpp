#pragma once
// The model in train and score modes (its paged mode, for serving, is
// runtime/model/model_paged.hpp): one decoder-only transformer (GPT-2 or Llama, from a model_spec),
// fp32, forward and backward on the kernels, running the block code it shares with the paged
// serving forward (runtime/model/block). Parameters and gradients each live in one flat buffer in
// the canonical layout (runtime/model/layout: addressed by name, split into regions), so optimizer
// shards, checkpoints, safetensors and the serving weights all address the same bytes. Invariants:
// activations are sized for one (B, T) on first use and reused; a different (B, T) is laid out in
// the same buffer when it fits (a curriculum's shorter windows) and grows it once when not.
// Gradients ACCUMULATE across forward_backward calls until zero_grad. At most one parameter region
// is acquired at a time (ZeRO stage 3 gathers into one bucket); the gradient region of the
// embeddings is held through the whole backward.
// Device (docs: the cuda device, kernels/dispatch.hpp): a model built for device::cuda keeps
// its parameters, gradients, activations and bf16 operands in GPU memory and runs every kernel
// there (its calls set the thread's device for their duration); ids and targets still come from
// the host (checked there, then copied up), and the loss comes back as one [b*t] copy per step.
// Pointers it hands out (params(), grads(), param(), logits()) are then GPU memory: the host
// reads and writes parameters through load_params / read_params. On cuda, train and evaluation
// forwards of dense models (GPT-2, Llama; fp32 and bf16) run; MoE, random-LTD, quantized
// linears, calibration observers, ZeRO-3 region access, score and RL modes are refused by name.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/gemm_lib.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/model/block.hpp"
#include "runtime/model/layout.hpp"
#include "runtime/model/moe.hpp"
#include "runtime/model/moe_parallel.hpp"
#include "runtime/model/quant_linear.hpp"
#include "runtime/model/token_drop.hpp"

namespace zf {

// Where the model reads a region's parameters and accumulates its gradients. acquire returns a
// pointer to the region's first float (the region's tensors follow at their layout offsets
// minus region.begin); release says the model is done with it for now. The default (null
// access) reads the model's own flat buffers.
struct region_access {
  virtual ~region_access() = default;
  virtual float* acquire(int region) = 0;
  virtual void release(int region) = 0;
};

// Initialisation into a flat buffer in layout order: matrices N(0, 0.02), residual output
// projections (c_proj / o_proj, down_proj) N(0, 0.02/sqrt(2 n_layer)), norm weights 1, biases
// 0. Deterministic for a seed.
void init_params(const param_layout& layout, int n_layer, uint64_t seed, float* out);

// The layout of a run configuration's model (`model.*` keys).
param_layout layout_of(const model_config& m);

// The floats of training activations a transformer of spec s plans for a [b, t] batch (its
// activation_bytes() / 4 after a forward), counted without building one, for the check that a
// run fits in memory; a test holds the two equal.
// MoE models training over a group of `world` ranks (set_moe_group) with expert parallelism ep
// also plan the exchange buffers.
double activation_floats(const model_spec& s, int b, int t, int world = 1, int ep = 1);
// The bf16 copies a bf16-precision training step keeps beside them, in floats (bytes / 4): every
// layer's rounded weights and linear inputs (operand16_bytes() / 4 after a forward_backward)
// and the LM head's rounded weight, final-norm output and logit gradient.
double operand16_floats(const model_spec& s, int b, int t);

class transformer {
 public:
  // own_params / own_grads false: the flat buffers are not allocated and a region_access must
  // provide them (ZeRO stage 3 / stages 2-3).
  // where: cpu, or cuda (refused as set_current_device refuses it: no GPU and not simulated).
  explicit transformer(const model_spec& spec, bool own_params = true, bool own_grads = true,
                       device where = device::cpu);
  explicit transformer(const model_config& m, bool own_params = true, bool own_grads = true,
                       device where = device::cpu);
  device where() const { return where_; }
  // Host <-> the flat parameter buffer (layout().total floats), and the gradients to the host,
  // whatever the device (a GPU model's copies are waited for).
  void load_params(const float* host) { params_.upload(host, params_.size()); }
  void read_params(float* host) const { params_.download(host, params_.size()); }
  void read_grads(float* host) const { grads_.download(host, grads_.size()); }
  void set_param_access(region_access* a) { param_access_ = a; }
  void set_grad_access(region_access* a) { grad_access_ = a; }
  const std::vector<region>& regions() const { return layout_.regions; }

  const model_spec& spec() const { return spec_; }
  const param_layout& layout() const { return layout_; }
  fbuffer& params() { return params_; }
  const fbuffer& params() const { return params_; }
  fbuffer& grads() { return grads_; }
  float* param(const std::string& name);  // zf::error if unknown

  void init_weights(uint64_t seed);
  void zero_grad() { grads_.zero(); }

  // ids, targets: [b, t]. Logits [b*t, V] stay readable through logits(). Returns the mean loss
  // over the targets (>= 0 ids), or 0 when targets is null.
  float forward(const int* ids, const int* targets, int b, int t);
  // Forward + backward; adds d(loss * loss_scale)/dparams into grads(). Returns the mean loss.
  // Logits are consumed (the cross-entropy writes its gradient in place).
  // drop (random-LTD, token_drop.hpp; null = none, and only this mode drops): each listed layer
  // runs on drop->keep kept rows per sequence (causal among them, RoPE at their original
  // positions) and passes the other rows through unchanged, forward and backward. It is checked
  // up front (zf::error naming train.random_ltd.*) and costs no extra activation memory: the
  // layer's saved activations are compact and its row moves use buffers dead at that time.
  float forward_backward(const int* ids, const int* targets, int b, int t, float loss_scale = 1,
                         const token_drop* drop = nullptr);
  const float* logits() const { return logits_; }

  // Score mode: logprobs [b*t] = log p(targets[i] | ids up to i) under the model (the
  // log-softmax of the raw logits, as serving reports them); 0 where targets[i] < 0.
  void score(const int* ids, const int* targets, int b, int t, float* logprobs);

  // RL mode (policy gradients, values): a forward that keeps its activations for backward_rl
  // and gives, for ids/targets [b, t], any of: logprobs [b*t] of the targets (score mode's
  // formula, so the same bits as score() and the serving engine in batch-invariant mode; 0 where
  // targets[i] < 0), entropy [b*t] of each row's distribution (nats; 0 where targets[i] < 0) and,
  // with a value head, values [b*t] = x_final . v_head. Null outputs are skipped; with
  // logprobs and entropy both null the LM head is not computed at all (reward models, critics).
  // MoE: routed dropless (as score() and the engine); aux_scale > 0 makes backward_rl add the
  // balance and z-losses' gradients times it (the micro-batch's share of the update).
  void forward_rl(const int* ids, const int* targets, int b, int t, float* logprobs, float* entropy,
                  float* values, float aux_scale = 0.0f);
  // Backward of L = sum_i dlogp[i] * logprobs[i] + sum_i dvalue[i] * values[i] through the
  // last forward_rl (same ids and targets); either gradient may be null. Adds into grads().
  // The entropy is reported, not differentiated.
  void backward_rl(const int* ids, const int* targets, const float* dlogp, const float* dvalue);

  std::size_t activation_bytes() const { return acts_.bytes(); }
  // Bytes of the bf16 GEMM operands the last training forward kept for its backward (bf16
  // precision: block::operands16; 0 when it kept none).
  std::size_t operand16_bytes() const { return use16_ ? ops16_.size() * sizeof(float) : 0; }

  // MoE models (spec().moe, docs/moe.md): the last forward's routing per MoE layer, in layer
  // order. forward_backward routes with model.moe.capacity_factor and adds the auxiliary losses'
  // gradients (aux_loss_coef * balance + z_loss_coef * z-loss per layer, times loss_scale);
  // score and forward_rl route dropless (the serving engine's routing) and backward_rl adds the
  // auxiliary gradients only when forward_rl was given an aux_scale; forward routes with
  // eval_capacity_factor. The returned losses stay the cross-entropy alone.
  struct moe_layer_stats {
    int layer = 0, tokens = 0, dropped = 0;  // dropped: token choices past capacity
    std::vector<int> counts;                 // [E] choices per expert, before any drop
    double balance = 0, z_loss = 0, entropy = 0;
  };
  std::vector<moe_layer_stats> moe_stats() const;
  // Sums over the MoE layers of the last forward's balance and z-losses (unscaled).
  double moe_balance_loss() const;
  double moe_z_loss() const;
  // The routing figures of every forward_backward since clear_moe_step() (a training step's).
  const moe::step_stats& moe_step() const { return moe_step_; }
  void clear_moe_step() { moe_step_.layers.clear(); }
  // The draw model.moe.jitter's factors come from for the next forward_backward calls (set per
  // micro-batch from its global index, so that every rank and a resumed run draw alike).
  void set_route_seed(uint64_t seed) { route_seed_ = seed; }
  // Data- and expert-parallel training (runtime/model/moe_parallel): forward_backward routes over
  // g's ranks (all of them calling it together with equal shapes) and computes only this rank's
  // experts; other forwards route alone. Null (the default) or a group of one: alone. Set before
  // the first forward (it re-plans the activations).
  void set_moe_group(moe::group* g);

  // Calibration (runtime/quant): sees each projection's input during every forward, x [rows, C
  // or Q or I] dense: which 0 = qkv, 1 = o, 2 = up, 3 = down of layer l, 4 = the head (l = -1).
  struct linear_observer {
    virtual ~linear_observer() = default;
    virtual void input(int layer, int which, const float* x, int rows) = 0;
  };
  void set_observer(linear_observer* o) { observer_ = o; }
  // The forward up to the final norm (no head, no loss): what calibration runs.
  void forward_hidden(const int* ids, int b, int t);

  // One block alone on hidden states (layer-wise distillation, runtime/quant/lkd): layer l on
  // x [b*t, C], b sequences of t tokens at positions 0..t-1, causal within each -> out [b*t, C]
  // (out may be x when no backward follows), saving its activations as forward does (planned for
  // (b, t)). Backward, after the forward of the same l, x, b, t: d [b*t, C] holds d(out) on entry
  // and d(x) on exit; the block's weight gradients ACCUMULATE into its grads region.
  void block_forward_alone(int l, const float* x, int b, int t, float* out);
  void block_backward_alone(int l, const float* x, int b, int t, float* d);

  // Quantized linears (runtime/model/quant_linear) replacing the fp32 projections and head in
  // forward, score and forward_rl without gradients; forward_backward then refuses. Null: fp32.
  // The precision of its GEMMs (train.precision; kernels/gemm_lib.hpp): every forward,
  // backward, score and RL pass runs them in it; parameters, gradients and activations stay
  // fp32 (mixed precision's master weights).
  void set_precision(kernels::precision p) { precision_ = p; }
  kernels::precision precision() const { return precision_; }
  void set_quant(std::shared_ptr<const lm_quant> q);
  const lm_quant* quant() const { return quant_.get(); }

 private:
  struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *res2, *ln2, *ln2_mean, *ln2_rstd, *h,
        *res3;
    moe::layer_state moe;         // MoE layers: routing and the experts' saved activations
    moe::parallel_state moe_par;  // ... and their exchange plan when routed over a group
  };
  // The block's MLP part, dense and / or MoE: out = res2 + mlp(ln2); backward turns d(out) into
  // d(ln2) in dln_ (the residual's share of d stays in d).
  void mlp_part_forward(int l, const block::weights& w, int n, float* out);
  void mlp_part_backward(int l, const block::weights& w, const block::grads& g, int n,
                         const float* d);
  float* acquire_params(int r);
  void release_params(int r);
  float* acquire_grads(int r);
  void release_grads(int r);
  block::weights block_w(float* base, int l) const;
  block::grads block_g(float* base, int l) const;
  void plan(int b, int t);
  void lay_out(arena& acts, int b, int t);
  float run_forward(const int* ids, const int* targets, int b, int t, bool fuse_xent, float scale,
                    bool lm_head = true, const token_drop* drop = nullptr);
  void set_drop(const token_drop* drop, int b, int t);
  // Layer l of a [b, t] batch, plain or dropping (ltd_slot_): reads its input (encoded_ or the
  // previous layer's res3), writes its res3 [b*t, C]; backward turns dres_ from d(res3) into
  // d(input).
  void layer_forward(int l, int b, int t);
  void layer_backward(int l, int b, int t);
  // The block on n = b*t rows (b sequences of t tokens, causal within each): x [n, C] at
  // positions pos [n] -> out [n, C], saving la_[l]; out may be x. Backward: d [n, C] holds
  // d(out) on entry and d(x) on exit.
  void block_forward(int l, const float* x, int b, int t, const int* pos, float* out);
  void block_backward(int l, const float* x, int b, int t, const int* pos, float* d);
  // dvalue: [b*t] gradient of the value head's outputs, or null; lm: dlogits are in logits_.
  void head_backward(int R_head, float* gemb, const float* dvalue = nullptr, bool lm = true);
  void backward_from_head(const int* ids, const float* dvalue, bool lm);

  // On cuda: refuses `what` by name (the modes above that do not run there yet).
  void cpu_only(const char* what) const;
  // ids (slot 0) / targets (slot 1) [n = b*t] as the kernels read them: the host's own on cpu,
  // copied into io_'s slot on cuda.
  const int* ints_on_device(const int* host, int n, int slot);

  model_spec spec_;
  device where_ = device::cpu;
  param_layout layout_;
  fbuffer params_, grads_;
  region_access* param_access_ = nullptr;
  region_access* grad_access_ = nullptr;
  std::shared_ptr<const lm_quant> quant_;
  kernels::precision precision_ = kernels::precision::f32;
  linear_observer* observer_ = nullptr;
  int L_ = 0, R_emb_ = 0, R_final_ = 0;
  float* head_w_ = nullptr;  // [V, C] head held from the head's forward through its backward
  // bf16 precision: the head's weight [V, C] and lnf [BT, C] rounded by the head's forward (for
  // head16_rows_ = BT rows; -1: the last forward did not), dlogits [BT, V] by its backward.
  // (fbuffers of (n + 1) / 2 floats holding n bf16 values: on the model's device.)
  fbuffer head16_, lnf16_, dlogits16_;
  int head16_rows_ = -1;
  // bf16 precision, forwards that a backward may follow (forward_backward, forward_rl, the
  // block alone): every layer's GEMM operands kept from forward to backward (block::operands16,
  // views into ops16_, sized for the planned rows). use16_: the last such forward filled them.
  fbuffer ops16_;
  std::vector<block::operands16> o16_;
  bool use16_ = false;
  void plan_ops16(bool keep, int rows);
  const block::operands16* ops16(int l) const { return use16_ ? &o16_[std::size_t(l)] : nullptr; }
  float* head_base_ = nullptr;
  float* values_out_ = nullptr;  // forward_rl's values, written while the final region is held
  bool rl_lm_ = false;           // the last forward_rl computed logits
  std::vector<double> lse_;      // [b*t] its rows' log-sum-exp (rows with a target)
  fbuffer rope_;                 // cos | sin tables (Llama)
  block::rope_table rope_tab_;

  // training activations (arena acts_), planned for (b_, t_)
  arena acts_;
  int b_ = 0, t_ = 0;
  std::vector<int> pos_;  // [b*t] position of each row (host)
  // On cuda: GPU ints [3 * b*t]: ids | targets | positions of the current batch, and the host
  // copy of the step's per-row losses.
  fbuffer io_;
  const int* pos_dev_ = nullptr;
  std::vector<float> losses_host_;
  // random-LTD of the current forward_backward (set_drop): ltd_slot_ [L] = the layer's index in
  // the drop's layer list or -1; ltd_pos_ [dropping layers][b][ltd_keep_] kept positions.
  std::vector<int> ltd_slot_, ltd_pos_;
  int ltd_keep_ = 0;
  float *encoded_ = nullptr, *lnf_ = nullptr, *lnf_mean_ = nullptr, *lnf_rstd_ = nullptr;
  float *logits_ = nullptr, *losses_ = nullptr, *act_ = nullptr;
  std::vector<layer_acts> la_;
  moe::scratch moe_sc_;       // MoE layers' shared scratch
  model_spec expert_spec_;    // the spec an expert's MLP runs with (moe::expert_spec)
  moe::step_stats moe_step_;  // accumulated by forward_backward
  moe::group* moe_group_ = nullptr;
  moe::parallel_scratch moe_psc_;
  bool grouped() const { return moe_group_ && moe_group_->world() > 1; }
  uint64_t route_seed_ = 0;
  bool dropless_ = false;   // score / forward_rl under way: MoE layers route without capacity
  bool training_ = false;   // forward_backward under way: training capacity, auxiliary gradients
  float aux_scale_ = 0.0f;  // its loss scale (0: the backward adds no auxiliary gradient)
  // backward scratch shared by all layers
  float *dres_ = nullptr, *dln_ = nullptr, *dbig_ = nullptr, *dqkv_ = nullptr, *datty_ = nullptr,
        *datt_ = nullptr;
};

}  // namespace zf
