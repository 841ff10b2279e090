// SentencePiece GGUF tokenizers (tokenizer.ggml.model "llama", storage/gguf_text.cpp): llama.cpp's
// own tokenizer vectors for the Llama 2 vocabulary (tests/golden/gguf/ggml-vocab-llama-spm.*,
// see the README there), read as llama.cpp's tests/test-tokenizer-0.cpp reads them, and a
// Llama model exported with a SentencePiece tokenizer and read back. With ZF_LLAMA_CPP_VOCABS set
// to llama.cpp's models/ folder, its byte-level BPE vocabularies' vectors run too (those files
// are too big to commit).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "gguf_fixtures.hpp"
#include "kernels/ggml_quant.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/text/chat_template.hpp"
#include "storage/gguf.hpp"
#include "storage/gguf_model.hpp"
#include "test_util.hpp"
#include "tokenizer_fixtures.hpp"

namespace fs = std::filesystem;
using zf::spm_vocab;
using zf::tokenizer;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::kHf;
using zf::testing::slurp;
using zf::testing::temp_dir;
using zf::testing::gguf_fixtures::rewrite;

namespace {

const fs::path kGolden = fs::path(ZF_SOURCE_DIR) / "tests" / "golden" / "gguf";

struct vocab_case {
  std::string text;
  std::vector<int> ids;
};

// test-tokenizer-0.cpp's read_tests: inputs separated by "\n__ggml_vocab_test__\n" (a trailing
// one ends the last), one line of space-separated ids per input in the .out file.
std::vector<vocab_case> read_cases(const fs::path& inp, const fs::path& out) {
  const std::string raw = slurp(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<vocab_case> cases;
  for (std::size_t pos = 0; pos < raw.size();) {
    const std::size_t next = raw.find(sep, pos);
    cases.push_back({raw.substr(pos, next == std::string::npos ? next : next - pos), {}});
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  std::istringstream lines(slurp(out));
  std::size_t i = 0;
  for (std::string line; std::getline(lines, line); ++i) {
    REQUIRE(i < cases.size());
    std::istringstream ids(line);
    for (int id; ids >> id;) cases[i].ids.push_back(id);
  }
  REQUIRE(i == cases.size());
  return cases;
}

// Encodes every case of a vocabulary's vectors; returns how many gave the expected ids.
// space_prefix: decode gives " " + text (SentencePiece's add_space_prefix), else the text.
int check_cases(const tokenizer& tok, const fs::path& gguf, bool space_prefix) {
  const auto cases = read_cases(fs::path(gguf) += ".inp", fs::path(gguf) += ".out");
  CHECK(cases.size() > 30);
  int equal = 0;
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const std::vector<int> ids = tok.encode(c.text);  // test-tokenizer-0: add_special false
    CHECK(ids == c.ids);
    equal += ids == c.ids;
    // llama.cpp's detokenize drops the space add_space_prefix put first; our decode keeps it
    CHECK(tok.decode(ids) == (space_prefix && !c.text.empty() ? " " + c.text : c.text));
  }
  MESSAGE(gguf.filename().string()
          << ": " << equal << " of " << cases.size() << " llama.cpp vectors equal");
  return equal;
}

const tokenizer& llama2() {
  static const tokenizer tok =
      zf::storage::read_gguf_tokenizer(kGolden / "ggml-vocab-llama-spm.gguf");
  return tok;
}

}  // namespace

TEST_CASE("gguf spm: the Llama 2 vocabulary encodes llama.cpp's test strings to their ids") {
  const tokenizer& tok = llama2();
  REQUIRE(tok.spm() != nullptr);
  CHECK(tok.vocab_size() == 32000);
  CHECK(tok.bos_token_id() == 1);
  CHECK(tok.eos_token_id() == 2);
  CHECK(tok.prompt_specials().prefix == std::vector<int>{1});
  check_cases(tok, kGolden / "ggml-vocab-llama-spm.gguf", true);
}

TEST_CASE(
    "gguf spm: llama.cpp's byte-level BPE vocabularies, where ZF_LLAMA_CPP_VOCABS names them") {
  const char* dir = std::getenv("ZF_LLAMA_CPP_VOCABS");
  if (!dir) return;
  for (const char* name : {"llama-bpe", "gpt-2", "qwen2"}) {
    const fs::path gguf = fs::path(dir) / (std::string("ggml-vocab-") + name + ".gguf");
    if (!fs::exists(gguf)) continue;
    CAPTURE(gguf.string());
    check_cases(zf::storage::read_gguf_tokenizer(gguf), gguf, false);
  }
}

TEST_CASE("gguf spm: a Llama prompt gets BOS and a character outside the vocabulary its bytes") {
  const tokenizer& tok = llama2();
  const std::vector<int> ids = tok.encode_with_special("Hello world");
  CHECK(ids == std::vector<int>{1, 15043, 3186});
  CHECK(tok.decode(ids) == "<s> Hello world");
  // U+1F999 (F0 9F A6 99) is no Llama 2 piece: its bytes are <0xF0> ... = 3 + byte
  const std::vector<int> emoji = tok.encode("\xf0\x9f\xa6\x99");
  CHECK(emoji == std::vector<int>{29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99});
}

TEST_CASE("gguf spm: a chat prompt carries BOS once, in the plain format") {
  const tokenizer& tok = llama2();
  CHECK(zf::detect_chat_format(tok) == zf::chat_format::plain);
  const std::vector<zf::serve::chat_message> msgs = {{"user", "Hi"}};
  const std::string text = zf::format_chat(tok, msgs);
  CHECK(text.starts_with("<s>"));
  const std::vector<int> ids = zf::encode_chat(tok, msgs);
  REQUIRE(ids.size() > 2);
  CHECK(ids[0] == 1);
  CHECK(ids[1] != 1);
  CHECK(tok.decode(ids) == "<s> " + text.substr(3));  // the text after <s> gets the space prefix
  CHECK(tok.encode_prompt(text) == ids);
}

TEST_CASE("gguf spm: a Llama model exported with a SentencePiece tokenizer reads it back") {
  temp_dir d("gguf_spm");
  const zf::hf_model h = zf::load_hf_model(kHf / "tiny-llama");
  zf::lm_weights w = zf::copy_lm_weights(h.spec, h.flat.data());
  w.cfg.bos_id = 1;  // the fixture's own ids are its BPE tokenizer's
  w.cfg.eos_id = 2;
  // the Llama 2 vocabulary's first 300 tokens (specials, the 256 bytes, common pieces)
  spm_vocab v = *llama2().spm();
  v.pieces.resize(300);
  v.scores.resize(300);
  v.types.resize(300);
  v.chat_template = "{{ '[INST] ' + content + ' [/INST]' }}";  // written and read back
  const tokenizer tok = tokenizer::from_spm(v, "first 300");
  REQUIRE(w.cfg.vocab_size > 300);
  const auto file = d / "tiny.gguf";
  zf::storage::write_llama_gguf(w, tok, file, zf::kernels::ggml_format::f32);
  const auto g = zf::storage::gguf_file::open(file);
  CHECK(g.get_string("tokenizer.ggml.model") == "llama");
  CHECK(!g.has("tokenizer.ggml.merges"));
  CHECK(g.get_strings("tokenizer.ggml.tokens").size() == std::size_t(w.cfg.vocab_size));
  CHECK(g.get_strings("tokenizer.ggml.tokens")[300] == "[PAD300]");
  CHECK(g.get_bool("tokenizer.ggml.add_bos_token"));
  CHECK(g.get_bool("tokenizer.ggml.add_space_prefix"));
  CHECK(g.get_int("tokenizer.ggml.unknown_token_id") == 0);
  CHECK(g.get_string("tokenizer.chat_template") == v.chat_template);
  const zf::storage::gguf_model back = zf::storage::read_llama_gguf(file);
  CHECK(back.tok.chat_template() == v.chat_template);
  REQUIRE(back.tok.spm() != nullptr);
  const spm_vocab& r = *back.tok.spm();
  CHECK(r.pieces.size() == std::size_t(w.cfg.vocab_size));
  CHECK(std::vector<std::string>(r.pieces.begin(), r.pieces.begin() + 300) == v.pieces);
  CHECK(std::vector<float>(r.scores.begin(), r.scores.begin() + 300) == v.scores);
  CHECK(std::vector<int>(r.types.begin(), r.types.begin() + 300) == v.types);
  CHECK(r.types[300] == spm_vocab::unused);
  CHECK(back.tok.prompt_specials() == tok.prompt_specials());
  const std::string text = "The quick brown fox, 1234 times!\n";
  CHECK(back.tok.encode(text) == tok.encode(text));
  // (with 300 pieces "\u2581" alone is no token: it falls back to its three bytes, as it would
  // in llama.cpp, and decodes to itself, so only the two decodes are compared)
  CHECK(back.tok.decode(tok.encode(text)) == tok.decode(tok.encode(text)));
  CHECK(back.weights.cfg.bos_id == 1);
  CHECK(back.weights.cfg.eos_id == 2);
}

TEST_CASE("gguf spm: malformed SentencePiece metadata is refused naming the file and key") {
  temp_dir d("gguf_spm_refuse");
  const fs::path good = kGolden / "ggml-vocab-llama-spm.gguf";
  auto refused = [&](const char* tag, const auto& fix) {
    const auto bad = d / (std::string(tag) + ".gguf");
    rewrite(good, bad, fix);
    const std::string msg = error_of([&] { zf::storage::read_gguf_tokenizer(bad); });
    CHECK(contains(msg, bad.string()));
    return msg;
  };
  auto set = [](const char* key, zf::storage::gguf_value v) {
    return [key, v](auto& md, auto&) {
      for (auto& kv : md)
        if (kv.key == key) kv.value = v;
    };
  };
  using zf::storage::gguf_value;
  CHECK(contains(refused("scores", set("tokenizer.ggml.scores",
                                       gguf_value::array(std::vector<float>{0.0f, 1.0f}))),
                 "tokenizer.ggml.scores has 2 entries for 32000 tokens"));
  std::vector<int32_t> types(32000, 1);
  types[5] = 9;
  CHECK(contains(refused("types", set("tokenizer.ggml.token_type", gguf_value::array(types))),
                 "tokenizer.ggml.token_type of token 5 is 9"));
  types[5] = 6;  // "<0x02>" is a byte token already; make a normal piece one
  types[500] = 6;
  CHECK(contains(refused("byte", set("tokenizer.ggml.token_type", gguf_value::array(types))),
                 "expected \"<0xXX>\""));
  CHECK(contains(refused("bos", set("tokenizer.ggml.bos_token_id", gguf_value::u32(32000))),
                 "tokenizer.ggml.bos_token_id is 32000"));
}

TEST_CASE("gguf spm: the file's chat template picks Llama 2, Mistral or Zephyr turns") {
  // tokenizer.chat_template is Jinja we do not run; its markers choose the format
  // (runtime/text/chat_template.hpp), as llama.cpp's llm_chat_detect_template does, and an
  // export writes it back.
  temp_dir d("gguf_spm_chat");
  const fs::path good = kGolden / "ggml-vocab-llama-spm.gguf";
  auto with_template = [&](const char* tag, const std::string& tmpl) {
    const auto file = d / (std::string(tag) + ".gguf");
    rewrite(good, file, [&](auto& md, auto&) {
      md.push_back({"tokenizer.chat_template", zf::storage::gguf_value::string(tmpl)});
    });
    return zf::storage::read_gguf_tokenizer(file);
  };
  const std::vector<zf::serve::chat_message> msgs = {
      {"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello."}, {"user", "Bye"}};
  // Llama 2's template (abridged: the markers are what count)
  const tokenizer l2 = with_template(
      "llama2", "{{ bos_token + '[INST] ' + '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}");
  CHECK(l2.chat_template().find("[INST]") != std::string::npos);
  CHECK(zf::detect_chat_format(l2) == zf::chat_format::llama2);
  const std::string t2 = zf::format_chat(l2, msgs);
  CHECK(t2 ==
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello.</s><s>[INST] Bye [/INST]");
  const std::vector<int> ids = zf::encode_chat(l2, msgs);
  CHECK(std::count(ids.begin(), ids.end(), 1) == 2);  // BOS before each user turn
  CHECK(std::count(ids.begin(), ids.end(), 2) == 1);  // EOS after the answer
  // Mistral's has [INST] but no <<SYS>>: the system text is its own paragraph
  const tokenizer mi =
      with_template("mistral", "{{ '[INST] ' + message['content'] + ' [/INST]' }}");
  CHECK(zf::format_chat(mi, msgs) ==
        "<s>[INST] Be brief.\n\nHi [/INST] Hello.</s><s>[INST] Bye [/INST]");
  // TinyLlama-chat's (Zephyr)
  const tokenizer ze = with_template("zephyr", "{{ '<|user|>\\n' }}...{{ '<|assistant|>' }}");
  CHECK(zf::detect_chat_format(ze) == zf::chat_format::zephyr);
  CHECK(zf::format_chat(ze, msgs) ==
        "<s><|system|>\nBe brief.</s>\n<|user|>\n Hi </s>\n<|assistant|>\nHello.</s>\n"
        "<|user|>\nBye</s>\n<|assistant|>\n");
  // ChatML markers win over the rest; no template: the tokens decide (plain here)
  CHECK(zf::detect_chat_format(with_template("chatml", "<|im_start|>[INST]")) ==
        zf::chat_format::chatml);
  CHECK(zf::detect_chat_format(zf::storage::read_gguf_tokenizer(good)) == zf::chat_format::plain);
}
