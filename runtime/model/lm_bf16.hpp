#pragma once
// Serving weights in bf16 (issue 16: `serve --dtype bf16`, `generate`, `score`): every block's
// four projections (qkv, o, up, down) and the LM head held as bf16 rows (round to nearest even),
// run by the bf16 linear kernels (kernels/bf16_linear.hpp: fp32 activations and accumulation
// for decode rows, oneDNN's bf16 matmul for prefill). They ride on issue 14's quantized-linear
// carrier (quant_linear, lm_quant with scheme "bf16", attach_quant), so the paged mode (serving)
// and the score mode run them through the one block code without a second forward. MoE models:
// every expert's up and down projections too (the router stays fp32).
// What stays fp32: the token (and GPT-2 position) embeddings, the norms and the biases, and so a
// tied head's embedding table (its bf16 copy is the head; the lookup reads the fp32 table).
// Memory: the projections' fp32 slots of the flat store are released (zeroed; the pages
// returned to the kernel where the store is mapped, k_lazy_zero_bytes and larger), so resident
// weight bytes of the matrices halve.
#include <memory>
#include <string>

#include "kernels/ggml_quant.hpp"
#include "runtime/model/lm_weights.hpp"

namespace zf {

// The weights' dtype for serving: `engine.dtype` / `--dtype`. f16, q8_0, q4_0 (issue 18):
// every projection and the head in llama.cpp's (ggml's) format of that name, quantized once at
// load by ggml's reference quantizers into one owned buffer and run by kernels/ggml_quant.hpp
// (lm_quant scheme "gguf", as a GGUF file read in place); MoE models are refused.
enum class weight_dtype { fp32, bf16, f16, q8_0, q4_0 };
// The name -> the dtype; zf::error naming `option` and every choice for anything else.
weight_dtype parse_weight_dtype(const std::string& s, const std::string& option);
// The ggml format of a ggml dtype (f16, q8_0, q4_0); false for fp32 and bf16.
bool ggml_format_of(weight_dtype d, kernels::ggml_format& f);
// Every projection and the head of w in ggml format f (scheme "gguf"); zf::error naming option
// for quantized weights, MoE models, or inputs not whole blocks of f.
std::shared_ptr<lm_quant> ggml_quant_of(const lm_weights& w, kernels::ggml_format f,
                                        const std::string& option);
// In place, as to_bf16_weights below for every dtype (fp32: nothing to do).
void to_serving_weights(lm_weights& w, weight_dtype d, const std::string& option);
// A copy in dtype d (not fp32), w untouched, as bf16_weights_of below.
std::shared_ptr<const lm_weights> serving_weights_of(const lm_weights& w, weight_dtype d,
                                                     const std::string& option);

// The bf16 linear of an fp32 matrix with k inputs and n outputs, element (input j, output o) at
// w[j * stride_k + o * stride_n] (a Conv1D [in, out] matrix: stride_k = n, stride_n = 1; the
// [out, in] head: stride_k = 1, stride_n = k).
quant_linear bf16_linear_of(const float* w, std::size_t stride_k, std::size_t stride_n, int k,
                            int n);

// Every projection and the head of w in bf16 (scheme "bf16").
std::shared_ptr<lm_quant> bf16_quant_of(const lm_weights& w);

// Whether w's linears are bf16 (w.quant with scheme "bf16").
bool is_bf16(const lm_weights& w);

// In place: w's projections and head as bf16 and their fp32 slots released (see the top). The
// function bench/train_step and the CLI call to turn inference weights into bf16 serving
// weights. Nothing to do when w is bf16 already. zf::error naming `option` for weights already
// quantized to another scheme (bf16 on top of int4 codes means nothing).
void to_bf16_weights(lm_weights& w, const std::string& option = "--dtype bf16");

// A bf16 copy of w, w untouched (weights shared with others, e.g. an engine's updates): only the
// fp32 tensors that stay fp32 are copied. Same refusals as to_bf16_weights.
std::shared_ptr<const lm_weights> bf16_weights_of(const lm_weights& w,
                                                  const std::string& option = "--dtype bf16");

}  // namespace zf
