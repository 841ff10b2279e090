#pragma once
// Private to runtime/text/tokenizer*.cpp: the tokenizer's tables (tokenizer::model), its per-object
// scratch (tokenizer::state) and the byte-level helpers both loaders use.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/text/bpe_merge.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf {

namespace tokenizer_detail {

inline constexpr std::string_view kEotText = "<|endoftext|>";
// GPT-2's pre-tokenizer (encoder.py in openai/gpt-2).
constexpr std::string_view kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Bound on the per-word cache: it is cleared when it grows past this many entries, so a
// long-running process encoding unbounded text keeps bounded memory.
constexpr std::size_t kMaxCacheEntries = std::size_t{1} << 18;

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100...
inline std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> map{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = printable[b] ? char32_t(b) : next++;
  return map;
}

// Inverse of bytes_to_unicode over U+0000..U+0143 (-1: not a byte's character).
inline std::array<int, 324> unicode_to_bytes() {
  const auto b2u = bytes_to_unicode();
  std::array<int, 324> u2b;  // bytes_to_unicode maps onto U+0021..U+0143
  u2b.fill(-1);
  for (int b = 0; b < 256; ++b) u2b[b2u[b]] = b;
  return u2b;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("tokenizer: cannot open '{}'", p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("tokenizer: cannot read '{}'", p.string());
  return std::move(ss).str();
}

// Decodes one UTF-8 code point at s[i], advancing i; returns -1 on a malformed sequence.
inline long next_code_point(std::string_view s, std::size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return -1;
  long cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc >> 6) != 2) return -1;
    cp = (cp << 6) | (cc & 0x3F);
  }
  i += len;
  return cp;
}

inline std::uint64_t pair_key(int a, int b) {
  return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
}

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// The special tokens of a Hugging Face tokenizer (tokenizer_special.cpp; precedence in
// tokenizer.hpp, "Special tokens"): post_processor is tokenizer.json's (null when absent); the
// tokenizer_config.json beside tokenizer_json is read when present and read_config. lookup maps a
// token's text (an added token's content, else its model.vocab spelling) to its id, -1 if none.
struct hf_specials {
  special_rule rule;
  int bos = -1, eos = -1;     // tokenizer_config.json's bos_token / eos_token
  std::string chat_template;  // its chat_template ("" where none)
};
hf_specials read_hf_specials(const nlohmann::json& post_processor,
                             const std::filesystem::path& tokenizer_json, int vocab_size,
                             const std::function<int(const std::string&)>& lookup,
                             bool read_config = true);

}  // namespace tokenizer_detail

using namespace tokenizer_detail;

struct tokenizer::model {
  std::vector<std::string> bytes;  // id -> raw bytes
  std::array<int, 256> byte_id{};  // single byte -> id
  struct merge {
    int rank;
    int id;
  };
  std::unordered_map<std::uint64_t, merge> merges;  // (left id, right id) -> rank, merged id
  // raw bytes -> id for every token (an added token's content wins over an ordinary token)
  std::unordered_map<std::string, int, string_hash, std::equal_to<>> ids;
  struct added_token {
    std::string text;
    int id;
  };
  std::vector<added_token> added;
  std::array<std::vector<int>, 256>
      added_by_first;          // first byte -> indices into added, longest first
  std::vector<bool> special;   // id -> is an added token
  bool ignore_merges = false;  // a pre-token found in `ids` maps to its id without merging
  int eot = -1;
  special_rule specials;               // added by encode_with_special
  int bos_token = -1, eos_token = -1;  // tokenizer_config.json's; -1: none
  std::string chat_template;           // the file's chat template text ("" : none)
  // SentencePiece mode (from_spm, tokenizer_spm.cpp): the vocabulary as given and piece -> id
  // (what a merged symbol is looked up by); byte_id then holds each byte's fallback token (-1:
  // none) and merges, re and the per-word cache stay empty.
  std::optional<spm_vocab> spm;
  std::unordered_map<std::string, int, string_hash, std::equal_to<>> piece_ids;
  pcre2_code* re = nullptr;      // nullptr in SentencePiece mode
  std::string pattern;           // the pre-tokenizer regex re was compiled from
  bool pattern_literal = false;  // a Split String pattern (matched literally)

  void add_token(std::string text, int id) {
    ids.insert_or_assign(text, id);
    special.at(id) = true;
    added.push_back({std::move(text), id});
  }

  // Sorts `added` longest first and fills added_by_first (the split in encode_append).
  void index_added() {
    std::stable_sort(added.begin(), added.end(),
                     [](const auto& a, const auto& b) { return a.text.size() > b.text.size(); });
    for (std::size_t i = 0; i < added.size(); ++i)
      added_by_first[static_cast<unsigned char>(added[i].text[0])].push_back(int(i));
  }

  model() = default;
  model(const model&) = delete;
  model& operator=(const model&) = delete;
  ~model() { pcre2_code_free(re); }
};

struct tokenizer::state {
  std::unordered_map<std::string, std::vector<int>, string_hash, std::equal_to<>> cache;
  pcre2_match_data* md = nullptr;
  std::vector<int> parts;  // scratch for bpe
  bpe::scratch bpe;        // scratch for bpe_merge

  explicit state(const model& m)
      : md(m.re ? pcre2_match_data_create_from_pattern(m.re, nullptr) : nullptr) {
    if (m.re && !md) fail("tokenizer: out of memory creating PCRE2 match data");
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() { pcre2_match_data_free(md); }
};

}  // namespace zf
