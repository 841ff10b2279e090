#pragma once
// Inference weights of a decoder-only language model, in one canonical fp32 form that the
// serving forward (runtime/lm) reads, whatever they came from: a zeroflow GPT-2 checkpoint or a
// Hugging Face folder (GPT-2 or Llama). Matrices are [in, out] row-major (y = x @ w, the GPT-2
// Conv1D layout); Llama's nn.Linear [out, in] weights are transposed once at load, and its
// separate q/k/v and gate/up projections are fused so each is one GEMM per layer.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/tensor.hpp"

namespace zf {

enum class lm_arch { gpt2, llama };

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

struct lm_config {
  lm_arch arch = lm_arch::gpt2;
  std::string name;  // model id shown by /v1/models
  int vocab_size = 0;
  int hidden = 0;  // d_model (GPT-2 n_embd)
  int n_layer = 0;
  int n_head = 0;
  int n_kv_head = 0;             // == n_head for GPT-2; < n_head with grouped-query attention
  int head_dim = 0;              // hidden / n_head unless the config says otherwise
  int intermediate = 0;          // MLP width (GPT-2: 4 * hidden or n_inner)
  int max_positions = 0;         // context length
  float norm_eps = 1e-5f;        // LayerNorm (GPT-2) or RMSNorm (Llama) epsilon
  float rope_theta = 10000.0f;   // Llama only
  rope_scaling rope;             // Llama only
  bool tied_head = true;         // lm head == token embedding
  int bos_id = -1, eos_id = -1;  // -1: none
  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_kv_head * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
};

// One block's tensors; pointers into lm_weights::store. Absent tensors (GPT-2 has no gate,
// Llama has no biases) are nullptr.
struct lm_layer {
  const float* norm1_w = nullptr;  // [hidden]   ln_1 / input_layernorm
  const float* norm1_b = nullptr;  // [hidden]   GPT-2 only
  const float* qkv_w = nullptr;    // [hidden, qkv_dim]  columns: q (n_head*hd), k, v (n_kv*hd each)
  const float* qkv_b = nullptr;    // [qkv_dim]  GPT-2 (or Llama with attention_bias)
  const float* o_w = nullptr;      // [q_dim, hidden]
  const float* o_b = nullptr;      // [hidden]
  const float* norm2_w = nullptr;  // [hidden]
  const float* norm2_b = nullptr;  // [hidden]
  // GPT-2: up_w [hidden, intermediate] (c_fc) then GELU. Llama: up_w [hidden, 2*intermediate],
  // columns [0, I) the gate projection and [I, 2I) the up projection; act = silu(gate) * up.
  const float* up_w = nullptr;
  const float* up_b = nullptr;
  const float* down_w = nullptr;  // [intermediate, hidden]
  const float* down_b = nullptr;  // [hidden]
};

struct lm_weights {
  lm_config cfg;
  fbuffer store;                   // owns every tensor below
  const float* tok_emb = nullptr;  // [vocab, hidden]
  const float* pos_emb = nullptr;  // [max_positions, hidden], GPT-2 only
  std::vector<lm_layer> layers;
  const float* normf_w = nullptr;  // [hidden]
  const float* normf_b = nullptr;  // [hidden], GPT-2 only
  const float* head = nullptr;     // [vocab, hidden]; logits = x @ head^T (== tok_emb if tied)
};

// Loads a Hugging Face model folder: config.json (model_type "gpt2" or "llama"), every
// *.safetensors file in it (F32, F16 or BF16, converted to fp32). Throws zf::error naming the
// file and key/tensor for a missing or malformed config, an unsupported model_type or feature
// (e.g. a rope_scaling other than default, linear or llama3), a missing tensor or a shape
// mismatch.
// (Implemented in storage/hf_loader.cpp, next to the safetensors reader it uses.)
lm_weights load_hf_weights(const std::filesystem::path& dir);

struct model_config;
// A zeroflow GPT-2 (flat parameters in gpt2_layout order, as a checkpoint stores them) as
// inference weights; copies `flat`. eos_id is GPT-2's <|endoftext|> (50256) when it is in the
// vocabulary.
lm_weights gpt2_lm_weights(const model_config& m, const float* flat, const std::string& name);

}  // namespace zf
