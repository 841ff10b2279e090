#pragma once
// GGUF <-> zeroflow models (issue 18): a GPT-2 model written the way llama.cpp reads GPT-2 GGUF
// files (general.architecture "gpt2", its tensor names, hyper-parameters and byte-level BPE
// tokenizer), and such a file read back into fp32 weights and a tokenizer; the same for Llama
// models (write_llama_gguf / read_llama_gguf below, in storage/gguf_llama.cpp).
//
// GPT-2:
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
// "gpt-2", tokens, token_type, merges, bos/eos_token_id, add_bos_token / add_eos_token false}.
#include <filesystem>
#include <string>

#include "kernels/ggml_quant.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::storage {

// Writes w (fp32, GPT-2; tied or untied head) and tok as `file` (atomically; an existing file
// is refused). zf::error naming the reason for a Llama (write_llama_gguf) or MoE model, a width
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

// ---- Llama (storage/gguf_llama.cpp), as llama.cpp's convert_hf_to_gguf.py writes it ----------
// general.architecture "llama"; tensors token_embd.weight [C, V], output_norm.weight [C],
// output.weight [C, V] (only when the head is untied: the converter writes none for a tied
// one, and llama.cpp then reuses token_embd), blk.N.{attn_norm, ffn_norm}.weight [C],
// blk.N.attn_q.weight [C, Q], attn_k.weight / attn_v.weight [C, KV], attn_output.weight [Q, C],
// ffn_gate.weight / ffn_up.weight [C, I], ffn_down.weight [I, C] (+ attn_{q,k,v,output}.bias
// with attention biases), and rope_freqs.weight [head_dim / 2] for a llama3 rope scaling (the
// frequency divisors the converter computes). Our fused q|k|v and gate|up matrices are split
// into those tensors, and attn_q's / attn_k's rows (and biases) are permuted per head from
// Hugging Face's rotate-half RoPE order to ggml's interleaved pairs exactly as the converter's
// LlamaModel.permute does (n_head = head_count_kv for K; gguf_llama.cpp has the row map).
// Metadata: llama.{vocab_size, context_length, embedding_length, feed_forward_length,
// block_count, attention.head_count, attention.head_count_kv, attention.layer_norm_rms_epsilon,
// rope.freq_base, rope.dimension_count} (+ attention.key_length / value_length when head_dim is
// not C / n_head, rope.scaling.type "linear" + rope.scaling.factor for linear scaling) and the
// tokenizer: model "gpt2", pre "gpt-2" / "llama-bpe" / "qwen2" by the tokenizer's regex, tokens,
// token_type, merges, bos/eos ids and add_bos_token / add_eos_token from the tokenizer's special
// rule (the model spec's eos first); a SentencePiece tokenizer as model "llama" (tokens, scores,
// token_type, unknown_token_id, add_space_prefix). tokenizer.chat_template is not written: our
// tokenizers keep no template text (runtime/text/chat_template picks a format from the added
// tokens). Matrices in `type`, norms, biases and rope_freqs F32. zf::error naming the reason:
// another architecture, MoE (Mixtral) or a value head, a row width (the input size) not a whole
// number of 32-element blocks in a block format (naming the tensor), a tokenizer larger than the
// vocabulary, a pre-tokenizer regex llama.cpp has no name for, special-token rules GGUF cannot
// say (more than one token added at a side, an appended token other than eos).
void write_llama_gguf(const lm_weights& w, const tokenizer& tok, const std::filesystem::path& file,
                      kernels::ggml_format type);

// Reads a Llama GGUF in that layout (ours or llama.cpp's converter's; f32, f16, bf16, q8_0,
// q4_0 per tensor; output.weight optional): Q / K rows un-permuted, the parts fused into our
// qkv and gate|up matrices. rope_freqs.weight is read back as a llama3 scaling when it is one
// with low_freq_factor 1 and high_freq_factor 4 (the converter's defaults; refused by name
// otherwise). Tokenizer: model "gpt2" with pre "gpt-2" (or none), "llama-bpe" / "llama3" /
// "llama-v3" or "qwen2", or model "llama" (SentencePiece, tokenizer::from_spm).
// tokenizer.chat_template is ignored (our chat formats come from the tokenizer's added tokens).
// The spec's bos / eos ids are the file's. zf::error naming the file and key or tensor.
// in_place: o_proj, down_proj and the head (output.weight, or token_embd for a tied head) are
// read from the mapping as GPT-2's are. q|k|v and gate|up are NOT in place: the file's parts are
// copied, whole encoded rows (no re-quantization: every ggml row is independent, so this is
// lossless), into one owned buffer per fused matrix with Q / K rows in our order, kept with the
// mapping (lm_quant::owner). Where a fused matrix's parts differ in format, its rows are decoded
// into f32 rows there instead (still exact). The embedding and norms are fp32.
gguf_model read_llama_gguf(const std::filesystem::path& file, bool in_place = false);

// Only the tokenizer of a GGUF file (tokenizer.ggml.*: byte-level BPE "gpt2" or SentencePiece
// "llama", as read_llama_gguf reads it); a vocab-only file with no tensors is fine. zf::error
// naming the file and key.
tokenizer read_gguf_tokenizer(const std::filesystem::path& file);

// By architecture: write_gpt2_gguf or write_llama_gguf (w.cfg.arch); read_gpt2_gguf or
// read_llama_gguf (the file's general.architecture; another is refused naming file and key).
void write_gguf_model(const lm_weights& w, const tokenizer& tok, const std::filesystem::path& file,
                      kernels::ggml_format type);
gguf_model read_gguf_model(const std::filesystem::path& file, bool in_place = false);

}  // namespace zf::storage
