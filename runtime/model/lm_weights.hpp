#pragma once
// Inference weights of a decoder-only language model: the spec, the flat fp32 buffer in the one
// canonical layout (runtime/model/layout.hpp, the same bytes the training model and checkpoints
// address) and views of its tensors for the serving forward (runtime/lm), whatever they came
// from: a zeroflow checkpoint, a training model's parameters or a Hugging Face folder (whose
// nn.Linear [out, in] weights are transposed once at load and its separate q/k/v and gate/up
// projections fused, so each is one GEMM per layer).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/model_spec.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/model/layout.hpp"
#include "runtime/model/quant_linear.hpp"

namespace zf {

// One block's weights; pointers into lm_weights::store (layout.hpp block_tensors).
using lm_layer = block_tensors<const float>;

struct lm_weights {
  model_spec cfg;
  param_layout layout;             // make_layout(cfg)
  fbuffer store;                   // [layout.total]: owns every tensor below
  const float* tok_emb = nullptr;  // [vocab, hidden]
  const float* pos_emb = nullptr;  // [max_positions, hidden], GPT-2 only
  std::vector<lm_layer> layers;
  const float* normf_w = nullptr;  // [hidden]
  const float* normf_b = nullptr;  // [hidden], GPT-2 only
  const float* head = nullptr;     // [vocab, hidden]; logits = x @ head^T (== tok_emb if tied)
  // A quantized model's linears (runtime/model/quant_linear): layers[l].quant points into it and
  // the paged forward uses its head when it has one. Null: fp32 throughout.
  std::shared_ptr<const lm_quant> quant;
};

// Makes w a quantized model: its layers' projections (and head, when q has one) run q's
// formats. zf::error when q's layer count or shapes do not match w's spec.
void attach_quant(lm_weights& w, std::shared_ptr<const lm_quant> q);

// Takes `flat` ([make_layout(spec).total] floats in the canonical layout) and points the views
// into it. Throws zf::error when its size does not match the spec's layout.
lm_weights make_lm_weights(const model_spec& spec, fbuffer flat);
// Copies flat parameters (a training model's, a checkpoint's; host memory) into new inference
// weights, on `where` (cuda: the store in GPU memory, every view a GPU pointer).
lm_weights copy_lm_weights(const model_spec& spec, const float* flat, device where = device::cpu);

struct model_config;
// A run configuration's model (`model.*` keys) as inference weights, named `name`; copies flat.
lm_weights lm_weights_of(const model_config& m, const float* flat, const std::string& name);

// A Hugging Face folder read into the canonical layout: its spec (from config.json) and flat
// parameters. Used by serving (as lm_weights) and by fine-tuning (as the training model's
// initial parameters).
struct hf_model {
  model_spec spec;
  fbuffer flat;
};
// Loads config.json (model_type "gpt2" or "llama") and every *.safetensors file in dir (F32,
// F16 or BF16, converted to fp32). Throws zf::error naming the file and key/tensor for a missing
// or malformed config, an unsupported model_type or feature (e.g. a rope_scaling other than
// default, linear or llama3), a missing tensor or a shape mismatch.
// (Implemented in storage/hf_loader.cpp, next to the safetensors reader it uses.)
hf_model load_hf_model(const std::filesystem::path& dir);
lm_weights load_hf_weights(const std::filesystem::path& dir);

}  // namespace zf
