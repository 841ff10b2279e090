// tokenizer::load_hf against the ids tests/golden/gen_hf.py's BPE gives, against load_gpt2 on
// GPT-2's own files rewritten as a tokenizer.json, and format_chat's three formats.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/text/chat_template.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"
#include "tokenizer_fixtures.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using zf::testing::add_special;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::fixture_json;
using zf::testing::kHf;
using zf::testing::load_json;
using zf::testing::slurp;
using zf::testing::temp_dir;

TEST_CASE("hf tokenizer: fixture tokenizers reproduce the golden ids") {
  const auto golden = zf::storage::safetensors_file::open(kHf / "golden.safetensors");
  for (const std::string model : {"llama", "gpt2"}) {
    const auto tok = zf::tokenizer::load_hf(kHf / ("tiny-" + model) / "tokenizer.json");
    for (int i = 0; i < 3; ++i) {
      const std::string key = model + ".p" + std::to_string(i);
      CAPTURE(key);
      const std::string text = golden.metadata().at(key + ".text");
      const auto want32 = golden.to_i32(key + ".ids");
      const std::vector<int> want(want32.begin(), want32.end());
      const auto got = tok.encode(text);
      CHECK(got == want);
      CHECK(tok.decode(got) == text);
    }
  }
}

TEST_CASE("hf tokenizer: added tokens split the text and decode to their content") {
  const auto llama = zf::tokenizer::load_hf(kHf / "tiny-llama" / "tokenizer.json");
  CHECK(llama.vocab_size() == 458);
  CHECK(llama.token_id("<|begin_of_text|>") == 456);
  CHECK(llama.token_id("<|end_of_text|>") == 457);
  CHECK(llama.token_id("<|nope|>") == -1);
  CHECK(llama.token_id("e") >= 0);
  CHECK(llama.token_id(" the") >= 256);  // raw bytes, not the "Ġthe" spelling
  CHECK(llama.token_id("\xC4\xA0the") == -1);
  CHECK(llama.eot() == 457);
  CHECK(llama.is_special(456));
  CHECK_FALSE(llama.is_special(0));
  CHECK_FALSE(llama.is_special(9999));

  const auto ids = llama.encode("<|begin_of_text|>hi<|end_of_text|><|end_of_text|>x");
  REQUIRE(ids.size() >= 5);
  CHECK(ids.front() == 456);
  CHECK(ids[ids.size() - 3] == 457);
  CHECK(ids[ids.size() - 2] == 457);
  CHECK(llama.decode(ids) == "<|begin_of_text|>hi<|end_of_text|><|end_of_text|>x");
  // A prefix of a special token is ordinary text.
  const auto part = llama.encode("<|begin_of");
  CHECK(std::find(part.begin(), part.end(), 456) == part.end());
  CHECK(llama.decode(part) == "<|begin_of");

  const auto gpt2 = zf::tokenizer::load_hf(kHf / "tiny-gpt2" / "tokenizer.json");
  CHECK(gpt2.vocab_size() == 457);
  CHECK(gpt2.eot() == 456);
  CHECK(gpt2.encode("a<|endoftext|>") == std::vector<int>{gpt2.token_id("a"), 456});

  // Round trip over arbitrary bytes, invalid UTF-8 included.
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += char(b);
  for (const auto* tok : {&llama, &gpt2}) CHECK(tok->decode(tok->encode(bytes)) == bytes);

  // The longest added token wins where two start at the same place.
  temp_dir dir("tok_hf_added");
  auto j = fixture_json("tiny-llama");
  add_special(j, {"<|x|>", "<|x|>y"});
  const auto t = load_json(dir, j);
  CHECK(t.encode("<|x|>y<|x|>") == std::vector<int>{459, 458});
}

TEST_CASE("hf tokenizer: ignore_merges maps a pre-token in the vocabulary directly") {
  temp_dir dir("tok_hf_ignore");
  auto j = fixture_json("tiny-llama");
  j["model"]["vocab"]["zzzq"] = 458;  // no merge chain builds "zzzq"
  j["model"]["ignore_merges"] = true;
  CHECK(load_json(dir, j).encode("zzzq") == std::vector<int>{458});
  j["model"]["ignore_merges"] = false;
  const auto merged = load_json(dir, j).encode("zzzq");
  CHECK(merged.size() > 1);
}

TEST_CASE("hf tokenizer: GPT-2 files as tokenizer.json give load_gpt2's ids on Moby-Dick") {
  const fs::path gpt2_dir = fs::path(ZF_DATA_DIR) / "gpt2";
  const auto encoder = json::parse(slurp(gpt2_dir / "encoder.json"));
  json merges = json::array();
  std::istringstream bpe(slurp(gpt2_dir / "vocab.bpe"));
  for (std::string line; std::getline(bpe, line);)
    if (!line.empty() && !line.starts_with("#version")) merges.push_back(line);
  json j = {
      {"version", "1.0"},
      {"added_tokens", {{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", encoder}, {"merges", merges}}}};
  temp_dir dir("tok_hf_gpt2");
  const auto hf = load_json(dir, j);
  const auto ref = zf::tokenizer::load_gpt2(gpt2_dir);
  CHECK(hf.vocab_size() == 50257);
  CHECK(hf.eot() == 50256);
  const std::string text = slurp(fs::path(ZF_DATA_DIR) / "moby-dick.txt");
  const std::string with_eot = "<|endoftext|>" + text.substr(0, 5000) + "<|endoftext|>";
  CHECK(hf.encode(with_eot) == ref.encode(with_eot));
  const auto got = hf.encode(text);
  CHECK(got == ref.encode(text));
  CHECK(hf.decode(got) == text);
}

TEST_CASE("hf tokenizer: malformed tokenizer.json names the file and the field") {
  temp_dir dir("tok_hf_bad");
  const std::string file = (dir / "tokenizer.json").string();
  auto expect = [&](const json& j, std::string_view what) {
    const auto m = error_of([&] { load_json(dir, j); });
    CHECK_MESSAGE(contains(m, file), m);
    CHECK_MESSAGE(contains(m, what), m);
  };
  std::string m = error_of([&] { zf::tokenizer::load_hf(dir / "tokenizer.json"); });
  CHECK_MESSAGE(contains(m, file), m);  // missing
  std::ofstream(dir / "tokenizer.json") << "{\"model\": ";
  m = error_of([&] { zf::tokenizer::load_hf(dir / "tokenizer.json"); });
  CHECK_MESSAGE(contains(m, "not valid JSON"), m);

  const json good = fixture_json("tiny-llama");
  json j = good;
  j["model"]["type"] = "WordPiece";
  expect(j, "model.type");
  j = good;
  j["model"]["byte_fallback"] = true;
  expect(j, "byte_fallback");
  j = good;
  j["normalizer"] = {{"type", "NFC"}};
  expect(j, "normalizer");
  j = good;
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect(j, "Metaspace");
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(unclosed"}};
  expect(j, "PCRE2");
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  expect(j, "Isolated");
  j = good;
  j["model"]["merges"].push_back({"nota", "token"});
  expect(j, "merges[200]");
  j = good;
  j["model"]["merges"][0] = "no-space";
  expect(j, "merges[0]");
  j = good;
  j["model"].erase("vocab");
  expect(j, "model.vocab");
  j = fixture_json("tiny-gpt2");  // <|endoftext|> is in model.vocab and added_tokens
  j["model"]["vocab"].erase("!");
  expect(j, "no token has id 0");
  j = good;
  j["model"]["vocab"]["extra"] = 1000;
  expect(j, "token \"extra\" has id 1000, beyond the 459 tokens");
  j = good;
  j["model"]["vocab"]["<s>\u2581"] = 458;  // a SentencePiece-style spelling
  expect(j, "is not byte-level");
  j = good;
  j["added_tokens"].push_back(5);
  expect(j, "added token 5 is not an object");
  j = good;
  j["pre_tokenizer"]["pretokenizers"] = 7;
  expect(j, "unexpected structure");
}

// The tables are sized by the largest id: a huge one must be refused by name before it is used
// as a size (it was a std::bad_alloc naming nothing, or an out-of-memory kill).
TEST_CASE("hf tokenizer: an id far beyond the vocabulary is refused, naming file, token and id") {
  temp_dir dir("tok_hf_huge_id");
  const std::string file = (dir / "tokenizer.json").string();
  auto expect = [&](const json& j, std::initializer_list<std::string_view> parts) {
    const auto m = error_of([&] { load_json(dir, j); });
    CHECK_MESSAGE(contains(m, file), m);
    for (auto part : parts) CHECK_MESSAGE(contains(m, part), m);
  };
  const json good = fixture_json("tiny-llama");
  json j = good;
  j["model"]["vocab"]["\u0120zz"] = 1000000000;  // "Ġzz", a byte-level spelling
  expect(j, {"token \"\u0120zz\"", "id 1000000000", "beyond the 459 tokens"});
  j = good;
  j["model"]["vocab"]["huge"] = 2147483646;  // just below INT_MAX: an 80 GB table
  expect(j, {"token \"huge\"", "id 2147483646"});
  j = good;
  j["model"]["vocab"]["big"] = 18446744073709551615ull;
  expect(j, {"token \"big\"", "id 18446744073709551615"});
  j = good;
  j["model"]["vocab"]["neg"] = -3;
  expect(j, {"token \"neg\"", "id -3", "non-negative"});
  j = good;
  j["added_tokens"][1]["id"] = 1000000000;
  expect(j, {"added token \"<|end_of_text|>\"", "id 1000000000"});
  j = good;
  j["added_tokens"][0]["id"] = -1;
  expect(j, {"added token \"<|begin_of_text|>\"", "id -1"});

  // The bound is exact: the largest id a complete file can have still loads.
  j = good;
  j["model"]["vocab"]["zzz"] = 458;
  CHECK(load_json(dir, j).vocab_size() == 459);
}

// encoder.json (GPT-2's own files) is bounded by its number of entries too.
TEST_CASE("gpt2 tokenizer: an encoder.json id beyond its entries is refused by name") {
  temp_dir dir("tok_gpt2_huge_id");
  json enc = json::object();
  for (int b = 0; b < 256; ++b) enc[fmt::format("t{}", b)] = b;
  enc["<|endoftext|>"] = 1000000000;
  std::ofstream(dir / "encoder.json") << enc.dump();
  std::ofstream(dir / "vocab.bpe") << "#version: 0.2\n";
  const auto m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(contains(m, (dir / "encoder.json").string()), m);
  CHECK_MESSAGE(contains(m, "<|endoftext|>"), m);
  CHECK_MESSAGE(contains(m, "id 1000000000"), m);
}

TEST_CASE("hf tokenizer: chat formats by special tokens") {
  const std::vector<zf::serve::chat_message> msgs = {
      {"system", "Be brief."}, {"user", " Hi there\n"}, {"assistant", "Hello."}, {"user", "Bye"}};
  temp_dir dir("tok_hf_chat");

  auto j = fixture_json("tiny-llama");
  add_special(j, {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"});
  const auto llama3 = load_json(dir, j);
  CHECK(zf::detect_chat_format(llama3) == zf::chat_format::llama3);
  const std::string l3 = zf::format_chat(llama3, msgs);
  CHECK(l3 ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const auto ids = llama3.encode(l3);
  CHECK(ids.front() == 456);
  CHECK(std::count(ids.begin(), ids.end(), llama3.token_id("<|eot_id|>")) == 4);

  j = fixture_json("tiny-gpt2");
  add_special(j, {"<|im_start|>", "<|im_end|>"});
  const auto chatml = load_json(dir, j);
  CHECK(zf::detect_chat_format(chatml) == zf::chat_format::chatml);
  CHECK(zf::format_chat(chatml, msgs) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi there\n<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n");

  const auto plain = zf::tokenizer::load_hf(kHf / "tiny-gpt2" / "tokenizer.json");
  CHECK(zf::detect_chat_format(plain) == zf::chat_format::plain);
  CHECK(zf::format_chat(plain, {{"system", "S"}, {"user", "U"}}) ==
        "System: S\n\nUser: U\n\nAssistant:");
  CHECK(zf::format_chat(plain, {}) == "Assistant:");

  const auto m = error_of([&] { zf::format_chat(chatml, {{"user", "a"}, {"tool", "b"}}); });
  CHECK_MESSAGE(contains(m, "message 1 has role 'tool'"), m);
}

TEST_CASE("hf tokenizer: tokenizer_config.json's chat_template is kept and picks the format") {
  temp_dir dir("tok_hf_chat_template");
  const auto j = fixture_json("tiny-gpt2");
  auto with_config = [&](const nlohmann::json& cfg) {
    std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
    return load_json(dir, j);
  };
  // a string; a list of named templates (the "default" one); none
  const auto a =
      with_config({{"chat_template", "{% for m in messages %}<|user|>...<|assistant|>"}});
  CHECK(a.chat_template() == "{% for m in messages %}<|user|>...<|assistant|>");
  CHECK(zf::detect_chat_format(a) == zf::chat_format::zephyr);
  const auto b = with_config({{"chat_template",
                               {{{"name", "tool_use"}, {"template", "tools"}},
                                {{"name", "default"}, {"template", "[INST] x [/INST]"}}}}});
  CHECK(b.chat_template() == "[INST] x [/INST]");
  CHECK(zf::detect_chat_format(b) == zf::chat_format::llama2);
  const auto c = with_config(nlohmann::json::object());
  CHECK(c.chat_template().empty());
  CHECK(zf::detect_chat_format(c) == zf::chat_format::plain);
}
