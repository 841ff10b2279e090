#pragma once
// GGUF <-> zeroflow models (issue 18): a GPT-2 model written the way llama.cpp reads GPT-2 GGUF
// files (general.architecture "gpt2", its tensor names, hyper-parameters and byte-level BPE
// tokenizer), and such a file read back into fp32 weights and a tokenizer.
//
// Tensors (llama.cpp's names; ne[0] first, a linear weight as [in, out] = rows of outputs):
//   token_embd.weight [C, V], position_embd.weight [C, P], output.weight [C, V] (the head: the
//   tied embedding written again, as llama.cpp's converter does), output_norm.{weight,bias} [C],
//   blk.N.attn_norm.{weight,bias} [C], blk.N.attn_qkv.weight [C, 3C] + bias [3C],
//   blk.N.attn_output.weight [C, C] + bias, blk.N.ffn_norm.{weight,bias}, blk.N.ffn_up.weight
//   [C, I] + bias [I], blk.N.ffn_down.weight [I, C] + bias [C].
// Our linear weights are Conv1D [in, out] row-major: written transposed, one row per output.
// Every 2-D tensor is stored in the requested format; norms and biases stay F32.
// Metadata: general.{architecture, name, file_type, quantization_version},
// gpt2.{context_length, embedding_length, feed_forward_length, block_count,
// attention.head_count, attention.layer_norm_epsilon}, tokenizer.ggml.{model "gpt2", pre
// "gpt-2", tokens, token_type, merges, bos/eos_token_id, add_bos_token false}.
#include <filesystem>
#include <string>

#include "kernels/ggml_quant.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::storage {

// Writes w (fp32, GPT-2; tied or untied head) and tok as `file` (atomically; an existing file
// is refused). zf::error naming the reason for a Llama or MoE model (not written yet), a width
// that is not a whole number of 32-element blocks in a block format, a tokenizer larger than
// the vocabulary.
void write_gpt2_gguf(const lm_weights& w, const tokenizer& tok, const std::filesystem::path& file,
                     kernels::ggml_format type);

struct gguf_model {
  lm_weights weights;  // fp32 (block formats dequantized), or in place (below)
  tokenizer tok;
  std::string formats;  // the tensors' formats, e.g. "q4_0 x 50, f32 x 98"
};
// Reads a GPT-2 GGUF file in the layout above (written by us or by llama.cpp's converter; any
// of f32, f16, bf16, q8_0, q4_0 per tensor; output.weight optional: tied). zf::error naming the
// file and the key or tensor: another architecture, a missing or mis-shaped tensor, an
// unsupported tensor type, a tokenizer other than GPT-2's byte-level BPE.
// in_place: the four projections of every block and the head are not converted but read from
// the mapped file by kernels/ggml_quant.hpp (weights.quant, scheme "gguf", keeping the file
// open); the embeddings, norms and biases are fp32. Serving and scoring run them; training
// refuses them as any quantized linears.
gguf_model read_gpt2_gguf(const std::filesystem::path& file, bool in_place = false);

}  // namespace zf::storage
