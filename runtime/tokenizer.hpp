#pragma once
// GPT-2 byte-level BPE tokenizer (the "gpt2" / r50k encoding): exact GPT-2 ids.
//
// encode: text is first split on the special token "<|endoftext|>" (which becomes eot(), 50256),
// each piece is pre-tokenized with GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (PCRE2, UTF + UCP, JIT-compiled), and each pre-token's bytes are merged by vocab.bpe rank.
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

  tokenizer(const tokenizer& other);
  tokenizer& operator=(const tokenizer& other);
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // Token ids of text; "<|endoftext|>" anywhere in text becomes eot().
  std::vector<int> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int>& out) const;

  // Concatenated bytes of ids (the result may hold partial UTF-8 at its ends). An id outside
  // [0, vocab_size()) throws zf::error.
  std::string decode(std::span<const int> ids) const;
  // Raw bytes of one id (for streaming decode). An id out of range throws zf::error.
  const std::string& token_bytes(int id) const;

  int eot() const;         // 50256 for GPT-2
  int vocab_size() const;  // 50257 for GPT-2

  // Number of distinct pre-tokens currently cached (for tests and diagnostics).
  std::size_t cache_size() const;

 private:
  struct model;
  struct state;
  explicit tokenizer(std::shared_ptr<const model> m);
  void encode_word(std::string_view word, std::vector<int>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int>& out) const;

  std::shared_ptr<const model> model_;
  mutable std::unique_ptr<state> state_;  // per-word cache + match data; see "Threading" above
};

}  // namespace zf
