#pragma once
// Shared by the GGUF model readers and writers (gguf_model.cpp: GPT-2, gguf_llama.cpp: Llama,
// gguf_text.cpp: the tokenizer): ggml formats, llama.cpp's file types and the tokenizer's
// metadata. Not a public header.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ggml_quant.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/gguf.hpp"

namespace zf::storage::gguf_detail {

// llama.cpp's general.file_type for a model whose matrices are all in f (LLAMA_FTYPE_*).
uint32_t file_type(kernels::ggml_format f);
// The format of a GGUF tensor's ggml type id; false for a type we do not read.
bool format_of(uint32_t ggml_type, kernels::ggml_format& out);
// "q4_0 x 50, f32 x 98" from format name -> tensor count.
std::string formats_text(const std::map<std::string, int>& counts);

// The special-token ids and flags a tokenizer's metadata carries (-1: the key is not written).
struct token_ids {
  int bos = -1, eos = -1;
  bool add_bos = false, add_eos = false;
};

// Appends tokenizer.ggml.{model "gpt2", pre, tokens, token_type, merges, bos/eos_token_id,
// add_bos_token, add_eos_token} for tok padded to `vocab` rows (1 normal, 3 control, 5 unused
// for the padding rows). pre names tok's pre-tokenizer regex as llama.cpp does: "gpt-2",
// "llama-bpe" (Llama 3) or "qwen2"; another regex is refused by name (`what` starts the
// message).
// A SentencePiece tokenizer (tok.spm()) is written as model "llama": tokens, scores,
// token_type as it holds them (padding rows "[PAD<id>]", score -1000, unused), bos / eos /
// unknown_token_id, add_bos_token, add_eos_token, add_space_prefix; no pre, no merges.
void write_tokenizer(const tokenizer& tok, int vocab, const token_ids& ids,
                     std::vector<gguf_kv>& md, const std::string& what);

// The byte-level BPE tokenizer of a GGUF file (tokenizer.ggml.model "gpt2"), rebuilt as the
// tokenizer.json it stands for: pre "gpt-2" (or absent), "llama-bpe" / "llama3" / "llama-v3"
// (Llama 3's regex, ignore_merges as llama.cpp sets it) or "qwen2"; add_bos_token /
// add_eos_token become its special rule. Model "llama" is SentencePiece (tokenizer::from_spm):
// tokens, scores and token_type (both optional), bos / eos / unknown_token_id (absent: 1, 2, 0
// as llama.cpp defaults them), add_bos_token (absent: true), add_eos_token (false),
// add_space_prefix (true). zf::error naming the file and key otherwise. ids receives the
// file's bos / eos ids (-1: absent) and flags.
tokenizer read_tokenizer(const gguf_file& g, token_ids& ids);

// What a GGUF read in place keeps alive: the mapped file and the matrices assembled from its
// rows (fused q|k|v and gate|up of a Llama file).
struct in_place_owner {
  std::shared_ptr<const gguf_file> file;
  std::vector<std::vector<std::byte>> fused;
};

}  // namespace zf::storage::gguf_detail
