// Special tokens from the tokenizer's own files (tokenizer.json post_processor, then
// tokenizer_config.json add_bos_token / add_eos_token), as transformers applies them; the golden
// fixtures' prompts encoded with special tokens; chat prompts that carry BOS exactly once.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/text/chat_template.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"
#include "tokenizer_fixtures.hpp"

using json = nlohmann::json;
using zf::special_rule;
using zf::testing::add_special;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::fixture_json;
using zf::testing::kHf;
using zf::testing::load_json;
using zf::testing::temp_dir;

namespace {

// tiny-llama's added tokens (tests/golden/gen_hf.py: after the 456 BPE tokens).
constexpr int kBos = 456;  // <|begin_of_text|>
constexpr int kEos = 457;  // <|end_of_text|>

json special_piece(const std::string& name) {
  return {{"SpecialToken", {{"id", name}, {"type_id", 0}}}};
}

// TemplateProcessing as tokenizers serializes it: single = before... $A after..., with the ids
// of tiny-llama's two added tokens.
json template_processing(const std::vector<std::string>& before,
                         const std::vector<std::string>& after) {
  json single = json::array();
  for (const auto& b : before) single.push_back(special_piece(b));
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  for (const auto& a : after) single.push_back(special_piece(a));
  json pair = single;
  pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
  json specials = json::object();
  for (const auto& [name, id] : std::vector<std::pair<std::string, int>>{
           {"<|begin_of_text|>", kBos}, {"<|end_of_text|>", kEos}})
    specials[name] = {{"id", name}, {"ids", {id}}, {"tokens", {name}}};
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", pair},
          {"special_tokens", specials}};
}

// Llama 3's: Sequence [ByteLevel, TemplateProcessing "<|begin_of_text|> $A"].
json llama3_post_processor() {
  return {{"type", "Sequence"},
          {"processors",
           {{{"type", "ByteLevel"},
             {"add_prefix_space", true},
             {"trim_offsets", false},
             {"use_regex", true}},
            template_processing({"<|begin_of_text|>"}, {})}}};
}

void write_config(const temp_dir& dir, const json& c) {
  std::ofstream(dir / "tokenizer_config.json") << c.dump();
}

// tiny-llama's tokenizer.json with this post_processor, loaded from dir.
zf::tokenizer llama_with(const temp_dir& dir, const json& post) {
  auto j = fixture_json("tiny-llama");
  j["post_processor"] = post;
  return load_json(dir, j);
}

std::vector<int> concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("specials: the tokenizer.json post_processor decides what encode_with_special adds") {
  temp_dir dir("tok_special_post");
  const std::string text = "Call me Ishmael";

  const auto bos = llama_with(dir, template_processing({"<|begin_of_text|>"}, {}));
  CHECK(bos.prompt_specials() == special_rule{{kBos}, {}});
  const auto plain = bos.encode(text);
  CHECK(std::find(plain.begin(), plain.end(), kBos) == plain.end());  // encode adds nothing
  CHECK(bos.encode_with_special(text) == concat({kBos}, plain));
  CHECK(bos.encode_with_special("") == std::vector<int>{kBos});
  // Text already starting with BOS gets a second one, as transformers and vLLM give.
  CHECK(bos.encode_with_special("<|begin_of_text|>hi") == concat({kBos, kBos}, bos.encode("hi")));

  // Both sides, and the folder accepted in place of the file.
  llama_with(dir, template_processing({"<|begin_of_text|>"}, {"<|end_of_text|>"}));
  const auto both = zf::tokenizer::load_hf(dir.path);
  CHECK(both.prompt_specials() == special_rule{{kBos}, {kEos}});
  CHECK(both.encode_with_special(text) == concat(concat({kBos}, plain), {kEos}));

  // Nothing: null, absent, ByteLevel (GPT-2's, Qwen 2's).
  CHECK(llama_with(dir, nullptr).prompt_specials() == special_rule{});
  auto j = fixture_json("tiny-llama");
  j.erase("post_processor");
  CHECK(load_json(dir, j).prompt_specials() == special_rule{});
  const auto byte_level = llama_with(dir, {{"type", "ByteLevel"}, {"trim_offsets", false}});
  CHECK(byte_level.prompt_specials() == special_rule{});
  CHECK(byte_level.encode_with_special(text) == plain);

  // Llama 3's Sequence [ByteLevel, TemplateProcessing].
  CHECK(llama_with(dir, llama3_post_processor()).prompt_specials() == special_rule{{kBos}, {}});
  // A later processor wraps what the earlier ones produced.
  const json nested = {{"type", "Sequence"},
                       {"processors",
                        {template_processing({"<|begin_of_text|>"}, {}),
                         template_processing({"<|end_of_text|>"}, {"<|end_of_text|>"})}}};
  CHECK(llama_with(dir, nested).prompt_specials() == special_rule{{kEos, kBos}, {kEos}});

  // BERT / RoBERTa: cls $A sep.
  for (const char* type : {"BertProcessing", "RobertaProcessing"}) {
    CAPTURE(type);
    const json p = {
        {"type", type}, {"cls", {"<|begin_of_text|>", kBos}}, {"sep", {"<|end_of_text|>", kEos}}};
    CHECK(llama_with(dir, p).prompt_specials() == special_rule{{kBos}, {kEos}});
  }
}

TEST_CASE("specials: tokenizer_config.json add_bos_token / add_eos_token override the template") {
  temp_dir dir("tok_special_config");
  const json post = llama3_post_processor();

  // add_bos_token false drops the template's BOS; bos_token still resolves.
  write_config(dir, {{"add_bos_token", false}, {"bos_token", "<|begin_of_text|>"}});
  auto t = llama_with(dir, post);
  CHECK(t.prompt_specials() == special_rule{});
  CHECK(t.bos_token_id() == kBos);
  CHECK(t.eos_token_id() == -1);
  CHECK(t.encode_with_special("hi") == t.encode("hi"));

  // add_eos_token true appends eos_token; the BOS side, not named, keeps the template's.
  write_config(dir, {{"add_eos_token", true}, {"eos_token", "<|end_of_text|>"}});
  t = llama_with(dir, post);
  CHECK(t.prompt_specials() == special_rule{{kBos}, {kEos}});
  CHECK(t.eos_token_id() == kEos);
  CHECK(t.encode_with_special("hi") == concat(concat({kBos}, t.encode("hi")), {kEos}));

  // add_bos_token true adds BOS where the post_processor adds none; bos_token as an AddedToken
  // object, as older transformers saved it.
  write_config(dir, {{"add_bos_token", true},
                     {"add_eos_token", false},
                     {"bos_token",
                      {{"__type", "AddedToken"},
                       {"content", "<|begin_of_text|>"},
                       {"lstrip", false},
                       {"normalized", false},
                       {"rstrip", false},
                       {"single_word", false}}},
                     {"eos_token", {{"content", "<|end_of_text|>"}}}});
  t = llama_with(dir, nullptr);
  CHECK(t.prompt_specials() == special_rule{{kBos}, {}});
  CHECK(t.bos_token_id() == kBos);
  CHECK(t.eos_token_id() == kEos);

  // Without the flags the post_processor decides, whatever bos_token is (Llama 3's config).
  write_config(dir, {{"bos_token", "<|begin_of_text|>"},
                     {"eos_token", "<|end_of_text|>"},
                     {"tokenizer_class", "PreTrainedTokenizerFast"}});
  CHECK(llama_with(dir, post).prompt_specials() == special_rule{{kBos}, {}});
  CHECK(llama_with(dir, nullptr).prompt_specials() == special_rule{});
  // null flags and tokens count as absent; a token the vocabulary lacks resolves to -1.
  write_config(dir, {{"add_bos_token", nullptr}, {"bos_token", nullptr}, {"eos_token", "<nope>"}});
  t = llama_with(dir, post);
  CHECK(t.prompt_specials() == special_rule{{kBos}, {}});
  CHECK(t.bos_token_id() == -1);
  CHECK(t.eos_token_id() == -1);
  // An ordinary token named by its model.vocab spelling ("Ġ" is byte 0x20).
  write_config(dir, {{"add_eos_token", true}, {"eos_token", "\xC4\xA0"}});
  t = llama_with(dir, nullptr);
  CHECK(t.prompt_specials() == special_rule{{}, {t.token_id(" ")}});
}

TEST_CASE("specials: unsupported or inconsistent files name the file and the field") {
  temp_dir dir("tok_special_bad");
  const std::string tok_file = (dir / "tokenizer.json").string();
  auto expect = [&](const json& post, const std::string& file, std::string_view what) {
    const auto m = error_of([&] { llama_with(dir, post); });
    CHECK_MESSAGE(contains(m, file), m);
    CHECK_MESSAGE(contains(m, what), m);
  };
  expect({{"type", "Frobnicate"}}, tok_file, "post_processor type 'Frobnicate'");
  expect({{"type", "Sequence"}, {"processors", {{{"type", "ByteLevel"}}, {{"type", "Frob"}}}}},
         tok_file, "'Frob'");
  expect({{"trim_offsets", true}}, tok_file, "has no \"type\"");
  json p = template_processing({"<|begin_of_text|>"}, {});
  p["special_tokens"].erase("<|begin_of_text|>");
  expect(p, tok_file, "<|begin_of_text|>");
  p = template_processing({"<|begin_of_text|>"}, {});
  p["special_tokens"]["<|begin_of_text|>"]["ids"] = {9999};
  expect(p, tok_file, "9999");
  p = template_processing({}, {});
  p["single"].push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
  expect(p, tok_file, "single piece");
  p = template_processing({}, {});
  p["single"] = json::array({special_piece("<|begin_of_text|>")});
  expect(p, tok_file, "has no $A");
  expect({{"type", "BertProcessing"}, {"cls", "[CLS]"}, {"sep", {"[SEP]", 1}}}, tok_file,
         "\"cls\"");

  const std::string cfg_file = (dir / "tokenizer_config.json").string();
  const json post = llama3_post_processor();
  write_config(dir, {{"add_bos_token", "yes"}});
  expect(post, cfg_file, "\"add_bos_token\" is \"yes\"");
  write_config(dir, {{"add_bos_token", true}});
  expect(post, cfg_file, "bos_token is absent");
  write_config(dir, {{"add_eos_token", true}, {"eos_token", "</s>"}});
  expect(post, cfg_file, "eos_token '</s>' is not a token");
  write_config(dir, {{"bos_token", 7}});
  expect(post, cfg_file, "\"bos_token\" is 7");
  std::ofstream(dir / "tokenizer_config.json") << "{\"add_bos_token\": ";
  expect(post, cfg_file, "not valid JSON");
  std::ofstream(dir / "tokenizer_config.json") << "[]";
  expect(post, cfg_file, "JSON object");
}

TEST_CASE("specials: golden fixtures encode their prompts with special tokens as golden ids") {
  // gen_hf.py writes post_processor null (tiny-llama, tiny-llama31) and ByteLevel (tiny-gpt2),
  // no tokenizer_config.json; tiny-llama's p0 text itself starts with <|begin_of_text|>.
  const auto golden = zf::storage::safetensors_file::open(kHf / "golden.safetensors");
  for (const std::string model : {"llama", "llama31", "gpt2"}) {
    CAPTURE(model);
    const auto tok = zf::tokenizer::load_hf(kHf / ("tiny-" + model));
    CHECK(tok.prompt_specials() == special_rule{});
    CHECK(tok.bos_token_id() == -1);
    for (int i = 0; i < 3; ++i) {
      const std::string key = model + ".p" + std::to_string(i);
      CAPTURE(key);
      const auto want32 = golden.to_i32(key + ".ids");
      const std::vector<int> want(want32.begin(), want32.end());
      CHECK(tok.encode_with_special(golden.metadata().at(key + ".text")) == want);
    }
  }
  // GPT-2's own files add nothing, as GPT2TokenizerFast does.
  const auto gpt2 = zf::tokenizer::load_gpt2(std::filesystem::path(ZF_DATA_DIR) / "gpt2");
  CHECK(gpt2.prompt_specials() == special_rule{});
  CHECK(gpt2.encode_with_special("Hello<|endoftext|>") == gpt2.encode("Hello<|endoftext|>"));
}

TEST_CASE("specials: a chat prompt carries BOS once, from its template text") {
  temp_dir dir("tok_special_chat");
  const std::vector<zf::serve::chat_message> msgs = {{"user", "Hi"}};
  auto count_bos = [](const std::vector<int>& ids) {
    return std::count(ids.begin(), ids.end(), kBos);
  };

  // Llama 3: the template text starts with <|begin_of_text|>; the tokenizer adds one too, so
  // encoding the chat text with special tokens would double it.
  auto j = fixture_json("tiny-llama");
  j["post_processor"] = llama3_post_processor();
  add_special(j, {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"});
  const auto llama3 = load_json(dir, j);
  const auto ids = zf::encode_chat(llama3, msgs);
  CHECK(ids == llama3.encode(zf::format_chat(llama3, msgs)));
  CHECK(ids.front() == kBos);
  CHECK(count_bos(ids) == 1);
  CHECK(count_bos(llama3.encode_with_special(zf::format_chat(llama3, msgs))) == 2);

  // Plain and ChatML begin with the tokenizer's own prefix: BOS where it adds one, else nothing.
  const auto plain = llama_with(dir, template_processing({"<|begin_of_text|>"}, {}));
  CHECK(zf::format_chat(plain, msgs) == "<|begin_of_text|>User: Hi\n\nAssistant:");
  CHECK(zf::encode_chat(plain, msgs) == plain.encode_with_special("User: Hi\n\nAssistant:"));
  j = fixture_json("tiny-llama");
  add_special(j, {"<|im_start|>", "<|im_end|>"});
  const auto chatml = load_json(dir, j);
  CHECK(zf::format_chat(chatml, msgs) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  j["post_processor"] = template_processing({"<|begin_of_text|>"}, {});
  const auto chatml_bos = load_json(dir, j);
  CHECK(zf::format_chat(chatml_bos, msgs) ==
        "<|begin_of_text|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(count_bos(zf::encode_chat(chatml_bos, msgs)) == 1);
}
