// JSON-lines readers (rl_data.hpp): a bounded line reader, one check per way a line can be wrong,
// and the task-backed adapters.
#include "runtime/rl/rl_data.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "runtime/core/error.hpp"

namespace zf::rl {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Where a line came from, for messages "FILE:LINE: what".
struct line_ctx {
  std::string file;
  int line = 0;
  template <class... A>
  [[noreturn]] void error(fmt::format_string<A...> f, A&&... args) const {
    fail("{}:{}: {}", file, line, fmt::format(f, std::forward<A>(args)...));
  }
};

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

// Calls on_line(line number, text) for each line, its "\n" and a "\r" before it removed. Reads
// in 64 KiB blocks and refuses a line as soon as it passes kMaxLineBytes, so a file with no
// newlines (a binary, a JSON array on one line) never sits in memory whole.
void for_each_line(const fs::path& path,
                   const std::function<void(const line_ctx&, std::string_view)>& on_line) {
  line_ctx at{path.string(), 1};
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: cannot read: no such file", at.file);
  if (fs::is_directory(path, ec)) fail("{}: cannot read: it is a directory", at.file);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading ({})", at.file, std::strerror(errno));
  auto finish = [&](std::string& line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > kMaxLineBytes)
      at.error("line is longer than {} bytes (1 MiB); one JSON object per line", kMaxLineBytes);
    std::string_view text = line;
    if (at.line == 1 && text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 BOM
    on_line(at, text);
    line.clear();
    ++at.line;
  };
  std::string line, buf(std::size_t{1} << 16, '\0');
  while (in.read(buf.data(), std::streamsize(buf.size())) || in.gcount() > 0) {
    std::string_view chunk(buf.data(), std::size_t(in.gcount()));
    while (!chunk.empty()) {
      const std::size_t nl = chunk.find('\n');
      const std::string_view part = chunk.substr(0, nl);
      if (line.size() + part.size() > kMaxLineBytes + 1)  // + 1: a "\r" before the "\n"
        at.error("line is longer than {} bytes (1 MiB); one JSON object per line", kMaxLineBytes);
      line.append(part);
      if (nl == std::string_view::npos) break;
      finish(line);
      chunk.remove_prefix(nl + 1);
    }
  }
  if (in.bad()) fail("{}: read error after line {}", at.file, at.line - 1);
  if (!line.empty()) finish(line);  // a last line without "\n"
}

// The parser's reason without its "[json.exception.parse_error.101] parse error at line 1, "
// prefix (a line is always JSON line 1), cut to 200 bytes at a UTF-8 boundary.
std::string parse_reason(const json::parse_error& e) {
  std::string_view s = e.what();
  if (auto p = s.find("] "); p != std::string_view::npos) s.remove_prefix(p + 2);
  if (s.starts_with("parse error at line 1, ")) s.remove_prefix(23);
  if (s.size() > 200) {
    std::size_t n = 200;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    return std::string(s.substr(0, n)) + "...";
  }
  return std::string(s);
}

// Offset of the first byte of s that starts no valid UTF-8 character (RFC 3629: no overlong
// forms, no surrogates, nothing past U+10FFFF); s.size() when all of s is valid. Checked before
// parsing so the message can point at the byte rather than at a JSON token.
std::size_t first_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t len = c < 0x80             ? 1
                            : (c & 0xE0) == 0xC0 ? 2
                            : (c & 0xF0) == 0xE0 ? 3
                            : (c & 0xF8) == 0xF0 ? 4
                                                 : 0;
    if (len == 0 || i + len > s.size()) return i;
    std::uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return i;
}

// One line's JSON object, after the UTF-8 and syntax checks. `shape` is the expected object,
// shown when the line is not one.
json parse_object(const line_ctx& at, std::string_view text, std::string_view shape) {
  if (const std::size_t bad = first_invalid_utf8(text); bad < text.size())
    at.error("invalid UTF-8 at byte {} of the line; the file must be UTF-8", bad + 1);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    at.error("malformed JSON ({})", parse_reason(e));
  }
  if (!j.is_object()) at.error("expected a JSON object {}, found {}", shape, j.type_name());
  return j;
}

// j[key] as a non-empty string. Optional keys (required false) may be absent or null, giving "".
std::string string_key(const line_ctx& at, const json& j, const char* key, std::string_view shape,
                       bool required = true) {
  const auto it = j.find(key);
  if (!required && (it == j.end() || it->is_null())) return {};
  if (it == j.end()) at.error("missing key \"{}\" (each line is {})", key, shape);
  if (!it->is_string()) at.error("key \"{}\" must be a string, found {}", key, it->type_name());
  std::string s = it->get<std::string>();
  if (s.empty() && required) at.error("\"{}\" is empty", key);
  if (s.empty()) at.error("\"{}\" is empty; leave the key out (or null) where there is none", key);
  return s;
}

// Reads every record of a file, make(at, object) building one from a checked object.
template <class Record, class Make>
std::vector<Record> read_records(const fs::path& file, std::string_view shape, Make make) {
  std::vector<Record> out;
  for_each_line(file, [&](const line_ctx& at, std::string_view text) {
    if (blank(text)) return;
    out.push_back(make(at, parse_object(at, text, shape)));
  });
  if (out.empty()) fail("{}: no records", file.string());
  return out;
}

// The answer with one character replaced by the next of its class: a letter within the task's
// alphabet (at least two letters, so there is always another), a digit, else the next byte.
std::string change_one(std::string s, std::size_t pos, int letters) {
  char& c = s[pos];
  const int n = std::max(letters, 2);
  if (c >= 'a' && c <= 'z')
    c = c - 'a' < n ? char('a' + (c - 'a' + 1) % n) : 'a';
  else if (c >= '0' && c <= '9')
    c = char('0' + (c - '0' + 1) % 10);
  else
    c = char(static_cast<unsigned char>(c) + 1);
  return s;
}

}  // namespace

std::string mistake(const std::string& a, std::size_t kind, std::mt19937_64& rng, int letters) {
  const std::size_t n = a.size();
  if (n == 0) fail("mistake: an empty answer");
  const std::size_t p = rng() % n, q = rng() % n;  // drawn every time: two draws per sample
  std::string r;
  switch (kind % k_mistake_kinds) {
    case 0:
      r.assign(a.rbegin(), a.rend());
      break;
    case 1:
      r = change_one(a, p, letters);
      break;
    case 2:
      r = change_one(change_one(a, p, letters), p == q ? (p + 1) % n : q, letters);
      break;
    case 3:
      r = a;
      if (n >= 2) std::swap(r[p % (n - 1)], r[p % (n - 1) + 1]);
      break;
    case 4:
      r = a;
      if (n >= 2) r.erase(p, 1);
      break;
    case 5:
      r = a;
      r.insert(r.begin() + static_cast<std::ptrdiff_t>(p), change_one(a, q, letters)[q]);
      break;
    case 6:
      r = a.substr(0, std::max<std::size_t>(1, p));
      break;
    default:  // characters of the answer's class in a random order, of a random length 1..n+1
      for (std::size_t k = 0; k <= q % (n + 1); ++k) r += change_one(a, rng() % n, letters)[0];
      break;
  }
  return r == a ? change_one(a, p, letters) : r;
}

std::vector<prompt_record> read_prompts(const fs::path& file) {
  constexpr std::string_view shape = R"({"prompt": "...", "answer": "..."} (answer optional))";
  return read_records<prompt_record>(file, shape, [&](const line_ctx& at, const json& j) {
    return prompt_record{string_key(at, j, "prompt", shape),
                         string_key(at, j, "answer", shape, false), at.line};
  });
}

std::vector<sft_record> read_sft(const fs::path& file) {
  constexpr std::string_view shape = R"({"prompt": "...", "response": "..."})";
  return read_records<sft_record>(file, shape, [&](const line_ctx& at, const json& j) {
    return sft_record{string_key(at, j, "prompt", shape), string_key(at, j, "response", shape),
                      at.line};
  });
}

std::vector<preference_record> read_preferences(const fs::path& file) {
  constexpr std::string_view shape = R"({"prompt": "...", "chosen": "...", "rejected": "..."})";
  return read_records<preference_record>(file, shape, [&](const line_ctx& at, const json& j) {
    preference_record r{string_key(at, j, "prompt", shape), string_key(at, j, "chosen", shape),
                        string_key(at, j, "rejected", shape), at.line};
    // A pair with no difference teaches the reward model nothing and makes its loss constant.
    if (r.chosen == r.rejected)
      at.error(
          "\"chosen\" and \"rejected\" are identical; a preference pair needs two different "
          "responses");
    return r;
  });
}

std::vector<prompt_record> prompts_from_task(const task& t, std::uint64_t seed, int count) {
  std::vector<prompt_record> out;
  for (auto& s : make_samples(t, seed, count))
    out.push_back({std::move(s.prompt), std::move(s.answer), 0});
  return out;
}

std::vector<sft_record> sft_from_task(const task& t, std::uint64_t seed, int count) {
  std::vector<sft_record> out;
  for (auto& s : make_samples(t, seed, count))
    out.push_back({std::move(s.prompt), std::move(s.answer), 0});
  return out;
}

std::vector<preference_record> preferences_from_task(const task& t, std::uint64_t seed, int count) {
  const auto samples = make_samples(t, seed, count);
  // The positions of one-character changes come from their own stream, so the prompts stay
  // those of make_samples(t, seed, count) and sft_from_task with the same seed.
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);
  std::vector<preference_record> out;
  out.reserve(samples.size());
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    if (s.answer.empty()) fail("task '{}' made an empty answer for '{}'", t.name(), s.prompt);
    out.push_back({s.prompt, s.answer, mistake(s.answer, i, rng, t.options().letters), 0});
  }
  return out;
}

}  // namespace zf::rl
