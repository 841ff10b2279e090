// Inputs the fuzzers (fuzz/, scripts/fuzz) found that runtime/ mishandled, each reduced to the
// smallest case that shows it, so the fix stays.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>

#include "runtime/core/config.hpp"
#include "runtime/text/tokenizer.hpp"
#include "test_util.hpp"
#include "tokenizer_fixtures.hpp"

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::fixture_json;
using zf::testing::load_json;
using zf::testing::temp_dir;

TEST_CASE("fuzz regression: a tokenizer.json id far past its tokens is refused before allocating") {
  temp_dir dir("fuzz_tok");
  nlohmann::json j = fixture_json("tiny-gpt2");
  // One added token with the largest id the loader takes: the tables (id -> bytes, id -> special)
  // were sized by the largest id before any check, 2^31 strings (64 GB): std::bad_alloc, file
  // not named. Now an id at or past the number of entries is refused before any table is sized.
  j["added_tokens"].push_back({{"id", INT_MAX - 1}, {"content", "<|far|>"}, {"special", true}});
  const std::string m = error_of([&] { load_json(dir, j); });
  CHECK_MESSAGE(contains(m, (dir / "tokenizer.json").string()), m);
  CHECK_MESSAGE(contains(m, "added token \"<|far|>\" has id 2147483646, beyond the"), m);
}

TEST_CASE("fuzz regression: strings with line breaks survive to_toml and back") {
  // to_toml (what config.toml and a checkpoint's manifest hold) wrote these as multi-line literal
  // strings: ''' inside one ended it early (the file no longer parsed) and a leading line break
  // was dropped on reading.
  zf::run_config cfg;
  cfg.server.api_keys = {"e8\nmode '''x''' y", "\nleading", "tab\tand 'quote'"};
  cfg.data.corpus = "two\nlines";
  const std::string text = zf::to_toml(cfg);
  zf::run_config back;
  zf::apply_toml(back, text, "saved.toml");
  CHECK(back.server.api_keys == cfg.server.api_keys);
  CHECK(back.data.corpus == cfg.data.corpus);
  CHECK(zf::to_toml(back) == text);
  CHECK(zf::value_text(cfg, "data.corpus") == "\"two\\nlines\"");
  CHECK(zf::value_text(zf::run_config{}, "data.corpus") == "'moby-dick'");  // as before
}

TEST_CASE("fuzz regression: a data.tokenizer path the OS refuses is a config error") {
  // A name longer than PATH_MAX made validate's file check throw std::filesystem_error ("File
  // name too long"), not the zf::error naming the key.
  zf::run_config cfg;
  cfg.data.tokenizer = std::string(5000, 'a');
  const std::string m = error_of([&] { zf::validate(cfg); });
  CHECK_MESSAGE(contains(m, "data.tokenizer"), m);
}
