// utf8_scan and check_training_text (runtime/text/text_stream.hpp): a binary file or a text in
// another encoding given as a training corpus is named with its share of bad bytes, warned about
// when the share is small and refused above the threshold (issue 9).
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "runtime/text/text_stream.hpp"
#include "test_util.hpp"

using zf::testing::contains;
using zf::testing::error_of;

TEST_CASE("utf8_scan counts bytes outside valid characters, and NUL bytes") {
  CHECK(zf::utf8_scan("").bad_share() == 0);
  auto r = zf::utf8_scan("plain \xC3\xA9t\xC3\xA9 \xF0\x9F\x90\xB3");  // é, a whale
  CHECK(r.invalid == 0);
  CHECK(r.nul == 0);
  r =
      zf::utf8_scan(std::string("a\xFF"
                                "b\xC3",
                                4));  // a stray byte, a cut character
  CHECK(r.bytes == 4);
  CHECK(r.invalid == 2);
  r = zf::utf8_scan("\xED\xA0\x80\xC0\xAF");  // a surrogate, an overlong '/'
  CHECK(r.invalid == 5);
  r = zf::utf8_scan(std::string("x\0y\0", 4));
  CHECK(r.invalid == 0);
  CHECK(r.nul == 2);
  CHECK(r.bad_share() == 0.5);
  // Every byte utf8_sanitize replaces is counted.
  const std::string mixed = "ok\x80\x80 \xE2\x82 fine \xF5";
  const std::string clean = zf::utf8_sanitize(mixed);
  std::size_t replaced = 0;
  for (std::size_t i = clean.find("\xEF\xBF\xBD"); i != std::string::npos;
       i = clean.find("\xEF\xBF\xBD", i + 1))
    ++replaced;
  CHECK(zf::utf8_scan(mixed).invalid == replaced);
}

TEST_CASE("check_training_text: silent on text, warns on a few bad bytes, refuses a binary") {
  CHECK(zf::check_training_text("Call me Ishmael.", "a.txt", 0.01, "force it") == "");

  std::string text(10000, 'a');
  text[10] = '\xFF';
  text[20] = '\0';
  const std::string w = zf::check_training_text(text, "a.txt", 0.01, "force it");
  CHECK_MESSAGE(contains(w, "corpus a.txt: 0.02% of its bytes are not valid UTF-8"), w);
  CHECK_MESSAGE(contains(w, "1 invalid, 1 NUL, of 10000"), w);

  std::mt19937 rng(5);
  std::string binary(4096, '\0');
  for (char& c : binary) c = char(rng());
  const std::string m =
      error_of([&] { zf::check_training_text(binary, "/data/x.bin", 0.01, "Pass --force."); });
  CHECK_MESSAGE(contains(m, "corpus /data/x.bin: "), m);
  CHECK_MESSAGE(contains(m, "% of its bytes are not valid UTF-8"), m);
  CHECK_MESSAGE(contains(m, "more than the 1% allowed"), m);
  CHECK_MESSAGE(contains(m, "Pass --force."), m);
  // Forced (a share of 1): a warning only.
  CHECK(contains(zf::check_training_text(binary, "/data/x.bin", 1.0, ""), "/data/x.bin"));
  // The threshold is a share: 2 bad bytes in 100 pass 0.02 and fail 0.0199.
  std::string two(98, 'a');
  two += "\xFF\xFF";
  CHECK_NOTHROW(zf::check_training_text(two, "t", 0.02, ""));
  CHECK_THROWS_AS(zf::check_training_text(two, "t", 0.0199, ""), zf::error);
}
