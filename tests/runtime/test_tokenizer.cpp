// zf::tokenizer against golden ids from tiktoken's "gpt2" encoding
// (tests/golden/tokenizer/gen_tokenizer_golden.js writes them).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path kGolden = fs::path(ZF_SOURCE_DIR) / "tests" / "golden" / "tokenizer";
const fs::path kGpt2Dir = fs::path(ZF_DATA_DIR) / "gpt2";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

// Loaded once: the merge tables take a moment to build.
zf::tokenizer& gpt2() {
  static zf::tokenizer tok = zf::tokenizer::load_gpt2(kGpt2Dir);
  return tok;
}

// Index of the first difference between got and want, or -1 when they are equal.
long first_mismatch(const std::vector<int>& got, const std::vector<int>& want) {
  const std::size_t n = std::min(got.size(), want.size());
  for (std::size_t i = 0; i < n; ++i)
    if (got[i] != want[i]) return long(i);
  return got.size() == want.size() ? -1 : long(n);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const zf::error& e) {
    return e.what();
  }
  return "<no zf::error thrown>";
}

// A fresh temporary directory, removed on scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("zf_tok_test_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
  }
};

}  // namespace

TEST_CASE("tokenizer: GPT-2 vocabulary basics") {
  const auto& tok = gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot() == 50256);
  CHECK(tok.token_bytes(50256) == "<|endoftext|>");
  CHECK(tok.token_bytes(220) == " ");
  CHECK(tok.token_bytes(198) == "\n");
  CHECK(tok.token_bytes(15496) == "Hello");
  CHECK(tok.encode("Hello world") == std::vector<int>{15496, 995});
  CHECK(tok.encode("").empty());
  CHECK(tok.decode(std::vector<int>{}).empty());
  // Every byte has a single-byte token.
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, char(b));
    const auto ids = tok.encode(s);
    REQUIRE(ids.size() == 1);
    CHECK(tok.token_bytes(ids[0]) == s);
  }
}

TEST_CASE("tokenizer: edge cases match tiktoken") {
  const auto& tok = gpt2();
  const auto cases = nlohmann::json::parse(slurp(kGolden / "edge_cases.json"));
  REQUIRE(cases.size() >= 30);
  for (const auto& c : cases) {
    const auto name = c.at("name").get<std::string>();
    const auto text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<int>>();
    CAPTURE(name);
    CAPTURE(text);
    const auto got = tok.encode(text);
    CHECK_MESSAGE(got == want, "first mismatch at index " << first_mismatch(got, want));
    CHECK(tok.decode(got) == text);
    // Streaming: concatenating token_bytes one id at a time gives the text back.
    std::string streamed;
    for (int id : got) streamed += tok.token_bytes(id);
    CHECK(streamed == text);
    // encode_append appends to what is already there.
    std::vector<int> appended{1, 2, 3};
    tok.encode_append(text, appended);
    REQUIRE(appended.size() == want.size() + 3);
    CHECK(std::equal(want.begin(), want.end(), appended.begin() + 3));
  }
}

TEST_CASE("tokenizer: whole Moby-Dick matches tiktoken ids") {
  const auto meta = nlohmann::json::parse(slurp(kGolden / "moby_dick.json"));
  const std::string text = slurp(fs::path(ZF_DATA_DIR) / "moby-dick.txt");
  REQUIRE_MESSAGE(text.size() == meta.at("text_bytes").get<std::size_t>(),
                  "data/moby-dick.txt is not the file the golden ids were made from");
  const std::string raw = slurp(kGolden / "moby_dick.ids.u16le");
  const auto count = meta.at("count").get<std::size_t>();
  REQUIRE(raw.size() == 2 * count);
  std::vector<int> want(count);
  for (std::size_t i = 0; i < count; ++i)
    want[i] = int(std::uint8_t(raw[2 * i])) | (int(std::uint8_t(raw[2 * i + 1])) << 8);

  // A fresh copy starts with an empty word cache, so this times a cold encode.
  const zf::tokenizer tok = gpt2();
  REQUIRE(tok.cache_size() == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const auto got = tok.encode(text);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("encoded " << text.size() << " bytes into " << got.size() << " ids in " << secs
                     << " s (cold cache, " << tok.cache_size() << " distinct words)");

  const long mismatch = first_mismatch(got, want);
  if (mismatch >= 0) {
    const std::size_t i = std::size_t(mismatch);
    MESSAGE("got " << got.size() << " ids, want " << want.size());
    if (i < got.size() && i < want.size())
      MESSAGE("at index " << i << ": got " << got[i] << " ('" << tok.token_bytes(got[i])
                          << "'), want " << want[i] << " ('" << tok.token_bytes(want[i]) << "')");
  }
  CHECK_MESSAGE(mismatch == -1, "first mismatch at index " << mismatch);
  CHECK(tok.decode(got) == text);
  // A warm cache gives the same ids.
  CHECK(tok.encode(text) == got);
}

TEST_CASE("tokenizer: invalid UTF-8 neither crashes nor loses bytes") {
  const auto& tok = gpt2();
  const std::vector<std::string> inputs = {
      "\xff",
      "abc\xff def",
      "\xc3",              // truncated 2-byte sequence
      "hi \xe2\x80",       // truncated 3-byte sequence at the end
      "\x80\x80\x80 x",    // lone continuation bytes
      "\xc0\xaf",          // overlong '/'
      "\xed\xa0\x80",      // UTF-16 surrogate
      "\xf4\x90\x80\x80",  // beyond U+10FFFF
      "  \xfe\xfe  \n",
      std::string("a\0b\xff\0", 5),
      "caf\xc3\xa9\xff\xc3\xa9 ok<|endoftext|>\xfe",
  };
  for (const auto& s : inputs) {
    CAPTURE(s);
    std::vector<int> ids;
    REQUIRE_NOTHROW(ids = tok.encode(s));
    CHECK(tok.decode(ids) == s);
  }
  // Valid text around an invalid byte encodes as if the byte were a piece of its own.
  const auto ff = tok.encode("\xff");
  REQUIRE(ff.size() == 1);
  std::vector<int> want = tok.encode("abc");
  want.push_back(ff[0]);
  tok.encode_append(" def", want);
  CHECK(tok.encode("abc\xff def") == want);

  // Random bytes, and random mixes of ASCII with multibyte fragments, always round-trip.
  std::mt19937 rng(1234);
  const std::vector<std::string> atoms = {"a",
                                          "Z",
                                          " ",
                                          "  ",
                                          "\n",
                                          "\t",
                                          "'s",
                                          "9",
                                          "\xe2\x80",
                                          "\x94",
                                          "\xc3\xa9",
                                          "\xff",
                                          "<|endoftext|>",
                                          "!",
                                          "\xf0\x9f\x98\x80",
                                          "\xe4\xbd"};
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s;
    const int len = int(rng() % 40);
    for (int k = 0; k < len; ++k) {
      if (iter % 2) {
        s += char(rng() % 256);
      } else {
        s += atoms[rng() % atoms.size()];
      }
    }
    CAPTURE(s);
    std::vector<int> ids;
    REQUIRE_NOTHROW(ids = tok.encode(s));
    REQUIRE(tok.decode(ids) == s);
  }
}

TEST_CASE("tokenizer: out-of-range ids are errors") {
  const auto& tok = gpt2();
  CHECK_THROWS_AS(tok.token_bytes(-1), zf::error);
  CHECK_THROWS_AS(tok.token_bytes(50257), zf::error);
  CHECK(error_of([&] {
          tok.decode(std::vector<int>{15496, 60000});
        }).find("60000") != std::string::npos);
}

TEST_CASE("tokenizer: copies share tables but not caches") {
  const zf::tokenizer a = gpt2();
  zf::tokenizer b = a;
  CHECK(a.encode("copy me, please") == b.encode("copy me, please"));
  zf::tokenizer c = std::move(b);
  CHECK(c.encode(" moved") == a.encode(" moved"));
  CHECK(c.cache_size() > 0);
}

TEST_CASE("tokenizer: missing or corrupt files name the file") {
  const fs::path missing = fs::path(ZF_DATA_DIR) / "no-such-tokenizer-dir";
  const std::string msg = error_of([&] { zf::tokenizer::load_gpt2(missing); });
  CHECK_MESSAGE(msg.find((missing / "encoder.json").string()) != std::string::npos, msg);

  temp_dir dir;
  // encoder.json present, vocab.bpe missing.
  fs::copy_file(kGpt2Dir / "encoder.json", dir.path / "encoder.json");
  std::string m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(m.find((dir.path / "vocab.bpe").string()) != std::string::npos, m);

  // Corrupt vocab.bpe: a merge naming tokens that do not exist.
  dir.write("vocab.bpe", "#version: 0.2\nĠ t\nnotatoken zzzzzzzzzzz\n");
  m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(m.find((dir.path / "vocab.bpe").string()) != std::string::npos, m);
  CHECK_MESSAGE(m.find("line 3") != std::string::npos, m);

  // Malformed vocab.bpe line.
  dir.write("vocab.bpe", "#version: 0.2\nĠt\n");
  m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(m.find((dir.path / "vocab.bpe").string()) != std::string::npos, m);

  // Corrupt encoder.json.
  dir.write("encoder.json", "{\"a\": 0, \"b\": ");
  m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(m.find((dir.path / "encoder.json").string()) != std::string::npos, m);

  // Valid JSON, wrong shape.
  dir.write("encoder.json", "[1, 2, 3]");
  m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(m.find((dir.path / "encoder.json").string()) != std::string::npos, m);

  // Truncated vocabulary: no <|endoftext|>.
  dir.write("encoder.json", "{\"a\": 0, \"b\": 1}");
  m = error_of([&] { zf::tokenizer::load_gpt2(dir.path); });
  CHECK_MESSAGE(m.find((dir.path / "encoder.json").string()) != std::string::npos, m);
}
