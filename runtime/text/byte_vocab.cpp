// byte_level_tokenizer_json: the 256 single-byte tokens under their bytes_to_unicode spelling,
// plus <|endoftext|>.
#include "runtime/text/byte_vocab.hpp"

#include <array>
#include <nlohmann/json.hpp>

namespace zf {

namespace {

// GPT-2's bytes_to_unicode() (encoder.py in openai/gpt-2): the printable bytes '!'..'~',
// 0xA1..0xAC and 0xAE..0xFF spell themselves, the other 68 become U+0100.. in byte order. The
// tokenizer's own copy is private to its files (tokenizer_model.hpp); this one stays separate so
// that a mistake in either shows up when the tests load this file.
std::array<char32_t, 256> byte_spelling() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? char32_t(b) : next++;
  }
  return map;
}

// UTF-8 of one code point below U+0800 (bytes_to_unicode stays below U+0144).
std::string utf8_of(char32_t cp) {
  if (cp < 0x80) return std::string(1, char(cp));
  return {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
}

}  // namespace

// ordered_json keeps the vocab in id order and the keys in the order Hugging Face writes them,
// so the file reads like one the tokenizers library saved.
std::string byte_level_tokenizer_json() {
  const auto spelling = byte_spelling();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[utf8_of(spelling[b])] = b;
  const nlohmann::ordered_json byte_level = {{"type", "ByteLevel"},
                                             {"add_prefix_space", false},
                                             {"trim_offsets", true},
                                             {"use_regex", true}};
  const nlohmann::ordered_json eot = {{"id", kByteVocabEot},  {"content", "<|endoftext|>"},
                                      {"single_word", false}, {"lstrip", false},
                                      {"rstrip", false},      {"normalized", false},
                                      {"special", true}};
  const nlohmann::ordered_json j = {{"version", "1.0"},
                                    {"truncation", nullptr},
                                    {"padding", nullptr},
                                    {"added_tokens", nlohmann::ordered_json::array({eot})},
                                    {"normalizer", nullptr},
                                    {"pre_tokenizer", byte_level},
                                    {"post_processor", nullptr},
                                    {"decoder", byte_level},
                                    {"model",
                                     {{"type", "BPE"},
                                      {"dropout", nullptr},
                                      {"unk_token", nullptr},
                                      {"continuing_subword_prefix", nullptr},
                                      {"end_of_word_suffix", nullptr},
                                      {"fuse_unk", false},
                                      {"byte_fallback", false},
                                      {"ignore_merges", false},
                                      {"vocab", vocab},
                                      {"merges", nlohmann::ordered_json::array()}}}};
  return j.dump(2);
}

}  // namespace zf
