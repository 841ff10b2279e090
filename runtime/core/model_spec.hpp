#pragma once
// The one description of a decoder-only transformer that every mode runs from: training
// (forward + backward), scoring (per-token log-probs) and serving (paged, ragged batches).
// It says which architecture (norms, positions, activation, head tying, attention bias), its
// sizes, and the RoPE settings. A spec comes from the run configuration (`model.*` keys,
// spec_of) or from a Hugging Face config.json (storage/hf_loader); the weight layout
// (runtime/model/layout) is derived from it and nothing else.
#include <string>
#include <vector>

namespace zf {

// gpt2: pre-LayerNorm blocks, learned positions, GELU-tanh MLP, biases everywhere.
// llama: RMSNorm, rotary positions, SwiGLU MLP, no biases (optionally on q/k/v/o), grouped-query
// attention allowed.
enum class model_arch { gpt2, llama };

// Hugging Face config.json "rope_scaling" (transformers' modeling_rope_utils): how Llama's RoPE
// inverse frequencies theta^(-2i/d) are rescaled for a longer context. none: as they are;
// linear: all divided by factor; llama3 (Llama 3.1 / 3.2): by wavelength 2 pi / inv_freq, those
// shorter than original_max_positions / high_freq_factor unchanged, those longer than
// original_max_positions / low_freq_factor divided by factor, a smooth blend in between.
// The attention scale stays 1 / sqrt(head_dim) for all three.
struct rope_scaling {
  enum class kind { none, linear, llama3 };
  kind type = kind::none;
  double factor = 1.0;             // linear, llama3
  double low_freq_factor = 1.0;    // llama3
  double high_freq_factor = 4.0;   // llama3; > low_freq_factor
  int original_max_positions = 0;  // llama3: the context length the model was pre-trained on
};

// Mixture-of-Experts blocks (docs/moe.md has the exact math): in a layer with experts[l] > 0 the
// dense MLP is replaced by a router (z = ln2 @ router [C, E]; s = softmax or sigmoid of z), top_k
// experts per token (gates renormalised to sum 1 when top_k > 1 and norm_topk), each expert the
// architecture's MLP of width expert_intermediate; with capacity (unless dropless) an expert takes
// at most cap = min(n, max(min_capacity, ceil(factor * n * top_k / E))) of a forward's n tokens,
// first choices before second ones, and the rest pass through the residual. residual: PR-MoE's
// fixed dense MLP (the block's ordinary MLP tensors) added beside the experts. Training adds
// aux_loss_coef * Switch balance loss + z_loss_coef * router z-loss per MoE layer.
enum class moe_router { softmax, sigmoid };
struct moe_spec {
  std::vector<int> experts;  // [n_layer] experts of each layer, 0 = dense; empty = no MoE
  int top_k = 2;
  int expert_intermediate = 0;        // resolved: > 0 whenever a layer has experts
  double capacity_factor = 1.25;      // training forwards
  double eval_capacity_factor = 2.0;  // forward / score (the serving engine is always dropless)
  int min_capacity = 4;
  bool dropless = false;
  moe_router router = moe_router::softmax;
  bool norm_topk = true;
  bool residual = false;
  double aux_loss_coef = 0.01, z_loss_coef = 0.0;
  // DeepSeek-V3's auxiliary-loss-free balancing: > 0 gives each MoE layer a bias [E] added to the
  // scores for the top-k choice only (the gates stay the scores), moved after every optimizer
  // step by rate * sign(mean load - expert e's load).
  double bias_update_rate = 0.0;
  double jitter = 0.0;      // training: the router reads ln2 * U(1 - jitter, 1 + jitter) (Switch)
  double gate_scale = 1.0;  // the combine's gates times this (DeepSeek's routed_scaling_factor)
  bool router_bias() const { return bias_update_rate > 0; }
  int experts_of(int l) const { return experts.empty() ? 0 : experts[static_cast<std::size_t>(l)]; }
  bool any() const {
    for (int e : experts)
      if (e > 0) return true;
    return false;
  }
  int max_experts() const {
    int m = 0;
    for (int e : experts) m = e > m ? e : m;
    return m;
  }
};

struct model_spec {
  model_arch arch = model_arch::gpt2;
  std::string name;  // model id shown by /v1/models
  int vocab_size = 0;
  int hidden = 0;  // d_model (GPT-2 n_embd)
  int n_layer = 0;
  int n_head = 0;
  int n_kv_head = 0;            // == n_head for GPT-2; < n_head with grouped-query attention
  int head_dim = 0;             // hidden / n_head unless the config says otherwise
  int intermediate = 0;         // MLP width (GPT-2: 4 * hidden or n_inner)
  int max_positions = 0;        // context length
  float norm_eps = 1e-5f;       // LayerNorm (GPT-2) or RMSNorm (Llama) epsilon
  float rope_theta = 10000.0f;  // Llama only
  rope_scaling rope;            // Llama only
  bool tied_head = true;        // lm head == token embedding
  bool attn_bias = false;       // Llama: biases on q/k/v and o (GPT-2 always has them)
  // A scalar head v_head.weight [hidden] on the final norm's output (value = x . v_head, no
  // bias, as DeepSpeed-Chat's reward and critic models): reward models and PPO critics.
  bool value_head = false;
  moe_spec moe;                  // Mixture-of-Experts blocks (none by default)
  int bos_id = -1, eos_id = -1;  // -1: none
  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_kv_head * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  // Columns of the first MLP matrix: GPT-2's c_fc, or Llama's fused gate|up.
  int up_dim() const { return arch == model_arch::llama ? 2 * intermediate : intermediate; }
  // The same for one expert of an MoE layer.
  int expert_up_dim() const {
    return arch == model_arch::llama ? 2 * moe.expert_intermediate : moe.expert_intermediate;
  }
  // A block keeps its dense MLP tensors unless it is an MoE layer without PR-MoE's residual MLP.
  bool dense_mlp(int l) const { return moe.experts_of(l) == 0 || moe.residual; }
  bool has_biases() const { return arch == model_arch::gpt2; }
};

// Throws zf::error naming the field for an inconsistent spec (heads not dividing, odd head_dim
// under RoPE, sizes < 1), for derived widths (q_dim, qkv_dim, up_dim) beyond an int and for a
// parameter count beyond any machine (2^48 floats, 1 PiB).
void check_spec(const model_spec& s);
// Its MoE part: messages name the model.moe.* key a run configuration sets each value with.
void check_moe(const model_spec& s);

// The parameters of a spec (make_layout's total, in parts), counted in double so that any sizes
// can be counted before a layout is made: the vocabulary-sized tables (token embedding, untied
// head), the position table (GPT-2), the n_layer blocks and the final norm.
struct param_counts {
  double vocab = 0, positions = 0, blocks = 0, final_norm = 0;
  double experts = 0;  // of blocks: the MoE experts' parameters (each token uses top_k of them)
  double total() const { return vocab + positions + blocks + final_norm; }
};
param_counts count_params(const model_spec& s);

// The RoPE inverse frequencies of a Llama spec: [head_dim/2], theta^(-2i/d) rescaled per
// s.rope as transformers' modeling_rope_utils does (_compute_linear_scaling_rope_parameters,
// _compute_llama3_parameters), in double.
std::vector<double> rope_inv_freq(const model_spec& s);

const char* arch_name(model_arch a);

}  // namespace zf
