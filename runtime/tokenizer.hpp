#pragma once
// Byte-level BPE tokenizer: GPT-2's own files (the "gpt2" / r50k encoding, exact GPT-2 ids) or a
// Hugging Face tokenizer.json of the same family (GPT-2, Llama-3, Qwen-2 style).
//
// encode: text is first split on the added (special) tokens, leftmost first and longest at a
// position ("<|endoftext|>" -> eot(), 50256, for GPT-2); each piece is pre-tokenized with a
// regex, GPT-2's by default
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (PCRE2, UTF + UCP, JIT-compiled) or the Split regex of a tokenizer.json, and each pre-token's
// bytes are merged by merge rank (with ignore_merges, a pre-token that is itself in the
// vocabulary maps to its id directly, as Hugging Face does). encode never adds BOS/EOS: a
// tokenizer.json post_processor is ignored, the caller prepends bos_id where the model wants it.
// Input need not be valid UTF-8: invalid sequences never match the pattern, so each run of them
// becomes its own pre-token and is byte-level encoded like any other; decode(encode(x)) == x for
// every byte string x.
//
// Threading: the merge tables are immutable and shared between copies, but each object owns a
// per-word cache and PCRE2 match data that encode() mutates. One object must be used from one
// thread at a time; copy it (cheap: the tables are shared) to encode on several threads.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zf {

class tokenizer {
 public:
  // dir holds encoder.json and vocab.bpe; a missing, unreadable or corrupt file throws zf::error
  // naming the file.
  static tokenizer load_gpt2(const std::filesystem::path& dir);
  // A Hugging Face tokenizer.json: model.type "BPE" (vocab; merges as "a b" strings or [a, b]
  // pairs; ignore_merges), added_tokens, no normalizer, pre_tokenizer ByteLevel (use_regex: the
  // GPT-2 pattern) or Sequence [Split{Regex or String, Isolated}, ByteLevel{use_regex false}].
  // Anything else (WordPiece, byte_fallback, a normalizer, add_prefix_space...) throws zf::error
  // naming the file and the field.
  static tokenizer load_hf(const std::filesystem::path& tokenizer_json);

  tokenizer(const tokenizer& other);
  tokenizer& operator=(const tokenizer& other);
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // Token ids of text; an added token's text anywhere in text becomes its id.
  std::vector<int> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int>& out) const;

  // Concatenated bytes of ids (the result may hold partial UTF-8 at its ends). An id outside
  // [0, vocab_size()) throws zf::error.
  std::string decode(std::span<const int> ids) const;
  // Raw bytes of one id (for streaming decode). An id out of range throws zf::error.
  const std::string& token_bytes(int id) const;

  // The end-of-text token: 50256 for GPT-2; for load_hf the id of "<|endoftext|>" or else of
  // "<|end_of_text|>", -1 if neither exists (a chat model's stop token is its config's eos_id).
  int eot() const;
  int vocab_size() const;  // 50257 for GPT-2
  // Id of the token whose bytes are exactly `token` (an added token's content, or an ordinary
  // token's raw bytes, not its bytes_to_unicode spelling); -1 if there is none.
  int token_id(std::string_view token) const;
  // True for added tokens (<|endoftext|>, <|im_start|>...); false for ordinary ones and ids out
  // of range.
  bool is_special(int id) const;

  // Number of distinct pre-tokens currently cached (for tests and diagnostics).
  std::size_t cache_size() const;

 private:
  struct model;
  struct state;
  explicit tokenizer(std::shared_ptr<const model> m);
  static tokenizer load_hf_json(const std::filesystem::path& tokenizer_json);
  static tokenizer finish(std::shared_ptr<model> m, std::string_view pattern, bool literal,
                          const std::filesystem::path& source);
  void encode_word(std::string_view word, std::vector<int>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int>& out) const;

  std::shared_ptr<const model> model_;
  mutable std::unique_ptr<state> state_;  // per-word cache + match data; see "Threading" above
};

}  // namespace zf
