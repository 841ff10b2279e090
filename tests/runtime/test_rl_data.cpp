// RL data files (runtime/rl/rl_data.hpp): good JSON-lines files, every way a line is refused
// (the message names the file, the line and the reason), the task adapters and the example files.
#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <vector>

#include "runtime/rl/rl_data.hpp"
#include "runtime/rl/tasks.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

namespace {

fs::path write(const temp_dir& dir, const std::string& name, const std::string& text) {
  const auto p = dir / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

// The message of reading `text` as `kind` ("prompts", "sft", "preferences"), checked to start
// with FILE:LINE: and to contain `reason`.
void check_refused(const std::string& kind, const std::string& text, int line,
                   const std::string& reason) {
  temp_dir dir("rl_data");
  const auto p = write(dir, kind + ".jsonl", text);
  const std::string msg = error_of([&] {
    if (kind == "prompts") zf::rl::read_prompts(p);
    if (kind == "sft") zf::rl::read_sft(p);
    if (kind == "preferences") zf::rl::read_preferences(p);
  });
  CAPTURE(msg);
  CHECK(msg.starts_with(p.string() + ":" + std::to_string(line) + ": "));
  CHECK(contains(msg, reason));
}

}  // namespace

TEST_CASE("rl data: good files with blank lines, CRLF, a BOM and extra keys") {
  temp_dir dir("rl_data");
  const auto prompts = zf::rl::read_prompts(
      write(dir, "p.jsonl",
            "\xEF\xBB\xBF{\"prompt\": \"reverse abc=\", \"answer\": \"cba\"}\r\n"
            "\n   \n"
            "{\"prompt\": \"Say hi in French.\", \"id\": 7, \"source\": [\"x\"]}\n"
            "{\"prompt\": \"caf\\u00e9 \xE2\x82\xAC\", \"answer\": null}"));  // no final newline
  REQUIRE(prompts.size() == 3);
  CHECK(prompts[0].prompt == "reverse abc=");
  CHECK(prompts[0].answer == "cba");
  CHECK(prompts[0].line == 1);
  CHECK(prompts[1].prompt == "Say hi in French.");
  CHECK(prompts[1].answer.empty());
  CHECK(prompts[1].line == 4);
  CHECK(prompts[2].prompt == "caf\xC3\xA9 \xE2\x82\xAC");
  CHECK(prompts[2].line == 5);

  const auto sft = zf::rl::read_sft(write(dir, "s.jsonl",
                                          "\n{\"prompt\": \"copy ab=\", \"response\": \"ab\"}\n\n"
                                          "{\"response\": \"two\\nlines\", \"prompt\": \"p\"}\n"));
  REQUIRE(sft.size() == 2);
  CHECK(sft[0].response == "ab");
  CHECK(sft[0].line == 2);
  CHECK(sft[1].response == "two\nlines");
  CHECK(sft[1].line == 4);

  const auto prefs = zf::rl::read_preferences(write(
      dir, "c.jsonl", "{\"prompt\": \"sort ba=\", \"chosen\": \"ab\", \"rejected\": \"ba\"}\n"));
  REQUIRE(prefs.size() == 1);
  CHECK(prefs[0].chosen == "ab");
  CHECK(prefs[0].rejected == "ba");
  CHECK(prefs[0].line == 1);
}

TEST_CASE("rl data: malformed JSON, non-objects and invalid UTF-8 name the line and the reason") {
  const std::string ok = "{\"prompt\": \"a\", \"response\": \"b\"}\n";
  check_refused("sft", ok + "{\"prompt\": \"a\", \"response\": }\n", 2, "malformed JSON (");
  check_refused("sft", ok + ok + "{\"prompt\": \"a\"\n", 3, "malformed JSON");
  check_refused("sft", "{\"prompt\": \"a\", \"response\": \"b\"} {}\n", 1, "malformed JSON");
  check_refused("sft", ok + "[\"a\", \"b\"]\n", 2, "expected a JSON object");
  check_refused("sft", "\"just a string\"\n", 1, "found string");
  check_refused("prompts", "{\"prompt\": \"ab\xFF\"}\n", 1, "invalid UTF-8 at byte 15");
  check_refused("prompts", "{\"prompt\": \"\xC0\xAF\"}\n", 1,
                "invalid UTF-8 at byte 13");                                         // overlong
  check_refused("prompts", "{\"prompt\": \"\xED\xA0\x80\"}\n", 1, "invalid UTF-8");  // surrogate
  // The parser's reason comes without nlohmann's "[json.exception...]" prefix.
  temp_dir dir("rl_data");
  const auto msg = error_of([&] { zf::rl::read_sft(write(dir, "x.jsonl", "{nope}\n")); });
  CHECK_FALSE(contains(msg, "json.exception"));
  CHECK(contains(msg, "column"));
}

TEST_CASE("rl data: missing keys, keys that are not strings and empty values are named") {
  check_refused("prompts", "{\"answer\": \"x\"}\n", 1, "missing key \"prompt\"");
  check_refused("prompts", "{\"prompt\": 3}\n", 1, "key \"prompt\" must be a string, found number");
  check_refused("prompts", "{\"prompt\": \"\"}\n", 1, "\"prompt\" is empty");
  check_refused("prompts", "{\"prompt\": \"p\", \"answer\": \"\"}\n", 1, "\"answer\" is empty");
  check_refused("prompts", "{\"prompt\": \"p\", \"answer\": 19}\n", 1,
                "key \"answer\" must be a string");
  check_refused("sft", "{\"prompt\": \"p\"}\n", 1, "missing key \"response\"");
  check_refused("sft", "{\"prompt\": \"p\", \"response\": null}\n", 1,
                "key \"response\" must be a string, found null");
  check_refused("sft", "{\"prompt\": \"p\", \"response\": \"\"}\n", 1, "\"response\" is empty");
  check_refused("sft", "{\"prompt\": \"p\", \"response\": [\"r\"]}\n", 1, "found array");
  check_refused("preferences", "{\"prompt\": \"p\", \"chosen\": \"a\"}\n", 1,
                "missing key \"rejected\"");
  check_refused("preferences", "{\"prompt\": \"p\", \"chosen\": \"\", \"rejected\": \"b\"}\n", 1,
                "\"chosen\" is empty");
  check_refused("preferences", "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"\"}\n", 1,
                "\"rejected\" is empty");
  check_refused("preferences",
                "\n{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
                "{\"prompt\": \"p\", \"chosen\": \"same\", \"rejected\": \"same\"}\n",
                3, "\"chosen\" and \"rejected\" are identical");
}

TEST_CASE("rl data: missing, empty and over-long files") {
  temp_dir dir("rl_data");
  const auto missing = dir / "nope.jsonl";
  auto msg = error_of([&] { zf::rl::read_prompts(missing); });
  CHECK(contains(msg, missing.string()));
  CHECK(contains(msg, "no such file"));
  msg = error_of([&] { zf::rl::read_sft(dir.path); });
  CHECK(contains(msg, dir.path.string()));
  CHECK(contains(msg, "directory"));

  for (const std::string text : {"", "\n\n  \r\n"}) {
    const auto p = write(dir, "empty.jsonl", text);
    CHECK(error_of([&] { zf::rl::read_preferences(p); }) == p.string() + ": no records");
  }

  // Line 2 is 1 MiB + 1 byte: refused while reading, before it is parsed.
  const std::string big = "{\"prompt\": \"" + std::string(zf::rl::kMaxLineBytes, 'x') + "\"}";
  const auto p = write(dir, "big.jsonl", "{\"prompt\": \"a\"}\n" + big + "\n");
  msg = error_of([&] { zf::rl::read_prompts(p); });
  CHECK(msg.starts_with(p.string() + ":2: "));
  CHECK(contains(msg, "longer than 1048576 bytes"));
  // Just under the limit is read (the last line without a newline, and a CR before one).
  const std::string fits = "{\"prompt\": \"" + std::string(zf::rl::kMaxLineBytes - 14, 'y') + "\"}";
  REQUIRE(fits.size() == zf::rl::kMaxLineBytes);
  CHECK(zf::rl::read_prompts(write(dir, "fits.jsonl", fits + "\r\n" + fits)).size() == 2);
}

TEST_CASE("rl data: task adapters give the task's samples as records") {
  const auto t = zf::rl::make_task("reverse", {});
  const auto samples = zf::rl::make_samples(*t, 5, 40);
  const auto prompts = zf::rl::prompts_from_task(*t, 5, 40);
  const auto sft = zf::rl::sft_from_task(*t, 5, 40);
  const auto prefs = zf::rl::preferences_from_task(*t, 5, 40);
  REQUIRE(sft.size() == 40);
  REQUIRE(prefs.size() == 40);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    CAPTURE(samples[i].prompt);
    CHECK(prompts[i].prompt == samples[i].prompt);
    CHECK(prompts[i].answer == samples[i].answer);
    CHECK(sft[i].prompt == samples[i].prompt);
    CHECK(sft[i].response == samples[i].answer);
    CHECK(sft[i].line == 0);
    CHECK(prefs[i].prompt == samples[i].prompt);
    CHECK(prefs[i].chosen == samples[i].answer);
    CHECK(prefs[i].rejected != prefs[i].chosen);
    CHECK(t->reward(samples[i], prefs[i].rejected) < 0.5);
    // Kinds in turn: reversed, one changed, two changed, swapped (same length); dropped (one
    // shorter); inserted (one longer); cut short; random (1..n+1 characters).
    const std::size_t n = prefs[i].chosen.size(), k = i % zf::rl::k_mistake_kinds;
    const std::size_t got = prefs[i].rejected.size();
    if (k <= 3) CHECK(got == n);
    if (k == 4) CHECK(got == n - 1);
    if (k == 5) CHECK(got == n + 1);
    if (k == 6) CHECK(got < n);
    if (k == 7) CHECK((got >= 1 && got <= n + 1));
    if (k == 1) {
      int changed = 0;
      for (std::size_t k = 0; k < n; ++k) changed += prefs[i].chosen[k] != prefs[i].rejected[k];
      CHECK(changed == 1);
    }
  }
  // Kind 0: the answer reversed (for reverse, the prompt's letters as they stand).
  const std::string letters = samples[0].prompt.substr(8, samples[0].prompt.size() - 9);
  if (letters != samples[0].answer) CHECK(prefs[0].rejected == letters);
  // Deterministic, and even palindromes and one-letter alphabets get a different rejected.
  const auto again = zf::rl::preferences_from_task(*t, 5, 40);
  for (std::size_t i = 0; i < prefs.size(); ++i) CHECK(again[i].rejected == prefs[i].rejected);
  zf::rl::task_options one;
  one.letters = 1;
  for (const auto& name : zf::rl::task_names()) {
    const auto u = zf::rl::make_task(name, one);
    for (const auto& r : zf::rl::preferences_from_task(*u, 9, 20)) {
      CAPTURE(r.prompt);
      CHECK(r.rejected != r.chosen);
    }
  }
}

TEST_CASE("rl data: the example files read cleanly") {
  const fs::path data = fs::path(ZF_SOURCE_DIR) / "examples" / "data";
  const auto sft = zf::rl::read_sft(data / "sft.jsonl");
  const auto prompts = zf::rl::read_prompts(data / "prompts.jsonl");
  const auto prefs = zf::rl::read_preferences(data / "preferences.jsonl");
  CHECK(sft.size() == 16);
  CHECK(prompts.size() == 16);
  CHECK(prefs.size() == 12);
  // The reverse-task lines are what the built-in task would grade as correct.
  const auto reverse = zf::rl::make_task("reverse", {});
  int graded = 0;
  for (const auto& p : prompts)
    if (p.prompt.starts_with("reverse ") && !p.answer.empty()) {
      const std::string in = p.prompt.substr(8, p.prompt.size() - 9);
      CHECK(p.answer == std::string(in.rbegin(), in.rend()));
      ++graded;
    }
  CHECK(graded >= 4);
}
