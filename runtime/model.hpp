#pragma once
// GPT-2 (pre-LayerNorm decoder, learned positions, GELU-tanh MLP, tied LM head), fp32, forward
// and backward on the kernels. Parameters and gradients each live in one flat buffer laid out by
// `param_layout` under Hugging Face GPT-2 names (wte.weight, h.0.attn.c_attn.weight, ...; Conv1D
// weights are [in, out]), so optimizer shards, checkpoints and safetensors all address the same
// bytes by name and offset.
// Invariants: training activations are sized for one (B, T) on first use and reused; a different
// (B, T) re-plans them once. Gradients ACCUMULATE across forward_backward calls until zero_grad.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/config.hpp"
#include "runtime/tensor.hpp"

namespace zf {

struct param_info {
  std::string name;
  std::vector<int64_t> shape;
  std::size_t offset = 0;  // in floats, into the flat parameter buffer
  std::size_t numel = 0;
  bool decay = false;  // AdamW weight decay applies (matrices and embeddings)
};

struct param_layout {
  std::vector<param_info> params;
  std::size_t total = 0;
  const param_info* find(const std::string& name) const;
};

param_layout gpt2_layout(const model_config& m);
// GPT-2 initialisation into a flat buffer: N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
// LayerNorm (1, 0), biases 0. Deterministic for a seed.
void init_gpt2_params(const param_layout& layout, int n_layer, uint64_t seed, float* out);

// Parameter regions: contiguous ranges of the flat layout that forward and backward touch one
// at a time, in this order: 0 = embeddings (wte, wpe), 1..L = block l-1, L+1 = ln_f. ZeRO
// partitions each region across ranks, gathers a region's parameters just before use (stage 3)
// and reduce-scatters its gradients as soon as backward is done with it (stages 2, 3).
struct region {
  std::size_t begin = 0, end = 0;  // in floats, into the flat layout
  std::size_t size() const { return end - begin; }
};
std::vector<region> gpt2_regions(const param_layout& layout, int n_layer);

// Where the model reads a region's parameters and accumulates its gradients. acquire returns a
// pointer to the region's first float (the region's tensors follow at their layout offsets
// minus region.begin); release says the model is done with it for now. The default (null
// access) reads the model's own flat buffers.
struct region_access {
  virtual ~region_access() = default;
  virtual float* acquire(int region) = 0;
  virtual void release(int region) = 0;
};

// Per-layer KV cache for incremental decoding: k, v: [n_layer][n_positions, C].
struct kv_cache {
  fbuffer k, v;
  int len = 0;  // positions filled
};

class gpt2_model {
 public:
  // own_params / own_grads false: the flat buffers are not allocated and a region_access must
  // provide them (ZeRO stage 3 / stages 2-3).
  explicit gpt2_model(const model_config& cfg, bool own_params = true, bool own_grads = true);
  void set_param_access(region_access* a) { param_access_ = a; }
  void set_grad_access(region_access* a) { grad_access_ = a; }
  const std::vector<region>& regions() const { return regions_; }

  const model_config& config() const { return cfg_; }
  const param_layout& layout() const { return layout_; }
  fbuffer& params() { return params_; }
  const fbuffer& params() const { return params_; }
  fbuffer& grads() { return grads_; }
  float* param(const std::string& name);  // zf::error if unknown

  // GPT-2 initialisation: N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), LN (1, 0),
  // biases 0. Deterministic for a seed.
  void init_weights(uint64_t seed);
  void zero_grad() { grads_.zero(); }

  // ids, targets: [b, t]. Logits [b*t, V] stay readable through logits(). Returns the mean loss
  // over the targets (>= 0 ids), or 0 when targets is null.
  float forward(const int* ids, const int* targets, int b, int t);
  // Forward + backward; adds d(loss * loss_scale)/dparams into grads(). Returns the mean loss.
  // Logits are consumed (the cross-entropy writes its gradient in place).
  float forward_backward(const int* ids, const int* targets, int b, int t, float loss_scale = 1);
  const float* logits() const { return logits_; }

  // Incremental decoding: runs n tokens at positions cache.len .. cache.len+n-1 (a prefill when
  // n > 1, a decode step when n == 1), appends their K/V to the cache and writes the logits of
  // the last position into out: [V]. Allocation happens once per model (sized n_positions).
  void decode(const int* ids, int n, kv_cache& cache, float* out);
  kv_cache make_cache() const;

  std::size_t activation_bytes() const { return acts_.bytes() + infer_.bytes(); }

 private:
  struct layer_ptrs {  // views into params_ or grads_ for one block
    float *ln1_w, *ln1_b, *attn_w, *attn_b, *proj_w, *proj_b, *ln2_w, *ln2_b, *fc_w, *fc_b,
        *fcproj_w, *fcproj_b;
  };
  layer_ptrs layer(float* region_base, int l);
  float* tensor(float* region_base, int region, std::size_t param_index);
  float* acquire_params(int r);
  void release_params(int r);
  float* acquire_grads(int r);
  void release_grads(int r);
  void plan(int b, int t);
  float run_forward(const int* ids, const int* targets, int b, int t, bool fuse_xent, float scale);

  model_config cfg_;
  param_layout layout_;
  std::vector<region> regions_;
  fbuffer params_, grads_;
  region_access* param_access_ = nullptr;
  region_access* grad_access_ = nullptr;
  float* head_wte_ = nullptr;  // wte held from the head's forward through its backward

  // training activations (arena acts_), planned for (b_, t_)
  arena acts_;
  int b_ = 0, t_ = 0;
  float *encoded_ = nullptr, *lnf_ = nullptr, *lnf_mean_ = nullptr, *lnf_rstd_ = nullptr;
  float *logits_ = nullptr, *losses_ = nullptr, *gelu_ = nullptr;
  struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *res2, *ln2, *ln2_mean, *ln2_rstd, *fch,
        *res3;
  };
  std::vector<layer_acts> la_;
  // backward scratch shared by all layers
  float *dres_ = nullptr, *dln_ = nullptr, *dbig_ = nullptr, *dqkv_ = nullptr, *datty_ = nullptr,
        *datt_ = nullptr;

  // inference scratch (arena infer_), sized for n_positions rows
  arena infer_;
  float *ix_ = nullptr, *iln_ = nullptr, *iqkv_ = nullptr, *iatty_ = nullptr, *ifc_ = nullptr,
        *iatt_ = nullptr, *itmp_ = nullptr;
};

}  // namespace zf
