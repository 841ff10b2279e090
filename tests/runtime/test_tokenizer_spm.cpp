// SentencePiece mode of the tokenizer (runtime/text/tokenizer_spm.cpp) on small hand-made
// vocabularies: merges by score (leftmost on ties), the space prefix and U+2581, byte fallback
// and unknown, the split on control tokens, decode and streaming, and refusals. llama.cpp's own
// vectors for the Llama 2 vocabulary are in tests/storage/test_gguf_spm.cpp.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "runtime/text/text_stream.hpp"
#include "runtime/text/tokenizer.hpp"
#include "test_util.hpp"

using zf::spm_vocab;
using zf::tokenizer;
using zf::testing::contains;
using zf::testing::error_of;

namespace {

const std::string kSp = "\xe2\x96\x81";  // U+2581

// <unk> 0, <s> 1, </s> 2, then the 256 byte tokens (3 + byte) when `bytes`, then `pieces` as
// normal tokens with their scores.
spm_vocab small_vocab(const std::vector<std::pair<std::string, float>>& pieces, bool bytes = true) {
  spm_vocab v;
  auto add = [&](std::string p, float score, int type) {
    v.pieces.push_back(std::move(p));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, spm_vocab::unknown);
  add("<s>", 0, spm_vocab::control);
  add("</s>", 0, spm_vocab::control);
  static const char* hex = "0123456789ABCDEF";
  if (bytes)
    for (int b = 0; b < 256; ++b)
      add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, spm_vocab::byte);
  for (const auto& [p, s] : pieces) add(p, s, spm_vocab::normal);
  v.bos = 1;
  v.eos = 2;
  v.unk = 0;
  return v;
}

// Id of a piece in v (the test's own lookup, independent of the tokenizer's).
int id_of(const spm_vocab& v, const std::string& piece) {
  for (std::size_t i = 0; i < v.pieces.size(); ++i)
    if (v.pieces[i] == piece) return int(i);
  FAIL("no piece " << piece);
  return -1;
}

}  // namespace

TEST_CASE("tokenizer spm: the pair whose token scores highest merges first") {
  for (const bool bc_first : {true, false}) {
    const auto v = small_vocab({{kSp, -1},
                                {"a", -2},
                                {"b", -2},
                                {"c", -2},
                                {"ab", bc_first ? -5.0f : -3.0f},
                                {"bc", bc_first ? -3.0f : -5.0f}});
    const tokenizer tok = tokenizer::from_spm(v, "small");
    const std::vector<int> want =
        bc_first ? std::vector<int>{id_of(v, kSp), id_of(v, "a"), id_of(v, "bc")}
                 : std::vector<int>{id_of(v, kSp), id_of(v, "ab"), id_of(v, "c")};
    CHECK(tok.encode("abc") == want);
  }
}

TEST_CASE("tokenizer spm: equal scores merge the leftmost pair, merged symbols merge again") {
  const auto v = small_vocab({{kSp, -1}, {"a", -2}, {"aa", -3}, {kSp + "aa", -4}});
  const tokenizer tok = tokenizer::from_spm(v, "small");
  // "\u2581aaa": "\u2581a" is no token; aa (leftmost of the two) first, then "\u2581aa".
  CHECK(tok.encode("aaa") == std::vector<int>{id_of(v, kSp + "aa"), id_of(v, "a")});
}

TEST_CASE("tokenizer spm: spaces become U+2581 and only the text's start gets a prefix") {
  const auto v = small_vocab({{kSp, -1}, {"a", -2}, {"b", -2}, {kSp + "a", -3}, {kSp + "b", -3}});
  const tokenizer tok = tokenizer::from_spm(v, "small");
  const int sa = id_of(v, kSp + "a"), sb = id_of(v, kSp + "b"), sp = id_of(v, kSp);
  CHECK(tok.encode("a b") == std::vector<int>{sa, sb});
  CHECK(tok.encode(" a") == std::vector<int>{sp, sa});
  CHECK(tok.encode("").empty());
  // a control token's text is its id; the text after it starts a new piece, with a prefix
  CHECK(tok.encode("a<s>b") == std::vector<int>{sa, 1, sb});
  CHECK(tok.encode("<s>") == std::vector<int>{1});
  auto off = v;
  off.add_space_prefix = false;
  const tokenizer raw = tokenizer::from_spm(off, "small");
  CHECK(raw.encode("a b") == std::vector<int>{id_of(v, "a"), sb});
}

TEST_CASE("tokenizer spm: a character outside the vocabulary falls back to bytes, then unknown") {
  const auto v = small_vocab({{kSp, -1}, {"a", -2}});
  const tokenizer tok = tokenizer::from_spm(v, "small");
  // "\u00e9" is C3 A9: the byte tokens <0xC3> <0xA9>
  CHECK(tok.encode("\xc3\xa9") == std::vector<int>{id_of(v, kSp), 3 + 0xC3, 3 + 0xA9});
  CHECK(tok.decode(tok.encode("a\xc3\xa9")) == " a\xc3\xa9");
  const auto nob = small_vocab({{kSp, -1}, {"a", -2}}, false);
  const tokenizer unk = tokenizer::from_spm(nob, "small");
  CHECK(unk.encode("a\xc3\xa9") == std::vector<int>{id_of(nob, kSp), id_of(nob, "a"), 0, 0});
}

TEST_CASE("tokenizer spm: token bytes, decode, streaming and the special rule") {
  auto v = small_vocab({{kSp, -1}, {"a", -2}, {kSp + "a", -3}});
  v.pieces.push_back("[PAD]");
  v.scores.push_back(-1000);
  v.types.push_back(spm_vocab::unused);
  const tokenizer tok = tokenizer::from_spm(v, "small");
  CHECK(tok.vocab_size() == int(v.pieces.size()));
  CHECK(tok.token_bytes(id_of(v, kSp + "a")) == " a");
  CHECK(tok.token_bytes(3 + 'A') == "A");
  CHECK(tok.token_bytes(1) == "<s>");
  CHECK(tok.token_bytes(id_of(v, "[PAD]")).empty());
  CHECK(tok.token_spelling(id_of(v, kSp + "a")) == kSp + "a");
  CHECK(tok.is_special(0));
  CHECK(tok.is_special(1));
  CHECK(!tok.is_special(3));
  CHECK(tok.token_id(" ") == id_of(v, kSp));  // not <0x20>
  CHECK(tok.token_id("</s>") == 2);
  CHECK(tok.bos_token_id() == 1);
  CHECK(tok.eos_token_id() == 2);
  CHECK(tok.eot() == 2);
  CHECK(tok.merge_pairs().empty());
  CHECK(tok.pre_tokenizer_pattern().empty());
  REQUIRE(tok.spm() != nullptr);
  CHECK(tok.spm()->pieces == v.pieces);
  CHECK(tok.prompt_specials().prefix == std::vector<int>{1});
  CHECK(tok.prompt_specials().suffix.empty());
  const int sa = id_of(v, kSp + "a");
  CHECK(tok.encode_with_special("a") == std::vector<int>{1, sa});
  CHECK(tok.encode_prompt("<s>a") == std::vector<int>{1, sa});
  // streaming: the token bytes of "a\u00e9" as text_stream sees them
  zf::text_stream ts;
  std::string streamed;
  for (int id : tok.encode("a\xc3\xa9")) streamed += ts.push(tok.token_bytes(id));
  streamed += ts.finish();
  CHECK(streamed == " a\xc3\xa9");
  // copies share the tables
  const tokenizer copy = tok;
  CHECK(copy.encode("a a") == tok.encode("a a"));
}

TEST_CASE("tokenizer spm: malformed vocabularies are refused naming the source") {
  auto v = small_vocab({{"a", -2}});
  auto bad = v;
  bad.scores.pop_back();
  CHECK(contains(error_of([&] { tokenizer::from_spm(bad, "vocab.gguf"); }), "vocab.gguf"));
  bad = v;
  bad.pieces[3] = "<0xZZ>";
  CHECK(contains(error_of([&] { tokenizer::from_spm(bad, "vocab.gguf"); }), "<0xZZ>"));
  bad = v;
  bad.pieces.back() = "<s>";
  CHECK(contains(error_of([&] { tokenizer::from_spm(bad, "vocab.gguf"); }), "twice"));
  bad = v;
  bad.types.back() = 9;
  CHECK(contains(error_of([&] { tokenizer::from_spm(bad, "vocab.gguf"); }), "type 9"));
  bad = v;
  bad.bos = int(v.pieces.size());
  CHECK(contains(error_of([&] { tokenizer::from_spm(bad, "vocab.gguf"); }), "bos"));
  bad = v;
  bad.bos = -1;
  CHECK(contains(error_of([&] { tokenizer::from_spm(bad, "vocab.gguf"); }), "add_bos"));
}
