// byte_level_tokenizer_json: the character-level vocabulary of the tiny RL policies, loaded by
// tokenizer::load_hf from a temp file (load_hf takes a path).
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/text/byte_vocab.hpp"
#include "runtime/text/tokenizer.hpp"
#include "test_util.hpp"

using zf::testing::temp_dir;

namespace {

zf::tokenizer load_byte_vocab(const temp_dir& dir) {
  std::ofstream(dir / "tokenizer.json", std::ios::binary) << zf::byte_level_tokenizer_json();
  return zf::tokenizer::load_hf(dir / "tokenizer.json");
}

}  // namespace

TEST_CASE("byte vocab: the json has 256 byte tokens, no merges and <|endoftext|> at 256") {
  const auto j = nlohmann::json::parse(zf::byte_level_tokenizer_json());
  CHECK(j["model"]["type"] == "BPE");
  CHECK(j["model"]["vocab"].size() == 256);
  CHECK(j["model"]["merges"].empty());
  CHECK(j["model"]["vocab"]["a"] == 97);
  CHECK(j["model"]["vocab"]["\xC4\xA0"] == 32);  // "Ġ" is the space
  CHECK(j["model"]["vocab"]["\xC4\x80"] == 0);   // U+0100 is byte 0
  REQUIRE(j["added_tokens"].size() == 1);
  CHECK(j["added_tokens"][0]["id"] == 256);
  CHECK(j["added_tokens"][0]["content"] == "<|endoftext|>");
  CHECK(j["pre_tokenizer"]["type"] == "ByteLevel");
  CHECK(j["pre_tokenizer"]["add_prefix_space"] == false);
  CHECK(j["pre_tokenizer"]["use_regex"] == true);
  CHECK(j["decoder"]["type"] == "ByteLevel");
  CHECK(j["post_processor"].is_null());
}

TEST_CASE("byte vocab: every byte is one token whose id is its value") {
  temp_dir dir("byte_vocab");
  const auto tok = load_byte_vocab(dir);
  CHECK(tok.vocab_size() == zf::kByteVocabSize);
  CHECK(tok.vocab_size() == 257);

  const std::string prompt = "reverse abc=";
  const auto ids = tok.encode(prompt);
  REQUIRE(ids.size() == prompt.size());
  for (std::size_t i = 0; i < prompt.size(); ++i) CHECK(ids[i] == (unsigned char)prompt[i]);
  CHECK(tok.encode("a") == std::vector<int>{97});

  for (int b = 0; b < 256; ++b) {
    CAPTURE(b);
    const std::string one(1, char(b));
    CHECK(tok.encode(one) == std::vector<int>{b});
    CHECK(tok.token_bytes(b) == one);
    CHECK(tok.token_id(one) == b);
    CHECK_FALSE(tok.is_special(b));
  }
  CHECK(tok.encode_with_special("ab") == std::vector<int>{97, 98});  // post_processor null
}

TEST_CASE("byte vocab: decode round-trips byte strings, non-ASCII and invalid UTF-8 included") {
  temp_dir dir("byte_vocab");
  const auto tok = load_byte_vocab(dir);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  const std::vector<std::string> texts = {"",
                                          "copy xyz=xyz",
                                          "add 12+7=19",
                                          "  two  spaces\n\ttab",
                                          "caf\xC3\xA9 \xE2\x82\xAC",
                                          "\xF0\x9F\x98\x80 emoji",
                                          "\xFF\xFE bad \xC3",
                                          all};
  for (const auto& text : texts) {
    CAPTURE(text);
    const auto ids = tok.encode(text);
    CHECK(ids.size() == text.size());  // no merges: one token per byte
    CHECK(tok.decode(ids) == text);
  }
}

TEST_CASE("byte vocab: <|endoftext|> is eot, special, and encodes to 256") {
  temp_dir dir("byte_vocab");
  const auto tok = load_byte_vocab(dir);
  CHECK(tok.eot() == zf::kByteVocabEot);
  CHECK(tok.eot() == 256);
  CHECK(tok.token_id("<|endoftext|>") == 256);
  CHECK(tok.is_special(256));
  CHECK(tok.encode("<|endoftext|>") == std::vector<int>{256});
  CHECK(tok.encode("cba<|endoftext|>") == std::vector<int>{99, 98, 97, 256});
  const std::vector<int> eot{256};
  CHECK(tok.decode(eot) == "<|endoftext|>");
  // No tokenizer_config.json: no bos / eos from the files; the end of a completion is eot().
  CHECK(tok.bos_token_id() == -1);
  CHECK(tok.eos_token_id() == -1);

  // A config beside it naming eos_token resolves to the same id (what a checkpoint would ship).
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|endoftext|>"})";
  const auto with_config = zf::tokenizer::load_hf(dir / "tokenizer.json");
  CHECK(with_config.eos_token_id() == 256);
  CHECK(with_config.prompt_specials().suffix.empty());  // no add_eos_token: nothing appended
}
