#include "runtime/text/text_stream.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "runtime/core/error.hpp"

namespace zf {
namespace {

// Length of the UTF-8 sequence a lead byte announces; 0 for a continuation or invalid byte.
int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

bool is_cont(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

// Length of the valid UTF-8 character at s[i], 0 if none starts there.
int utf8_char_at(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const int n = utf8_len(c);
  bool ok = n > 0 && i + n <= s.size();
  for (int j = 1; ok && j < n; ++j) ok = is_cont(static_cast<unsigned char>(s[i + j]));
  if (ok && n >= 3) {  // overlong, surrogate and beyond-U+10FFFF forms
    const auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
        (c == 0xF4 && c1 > 0x8F))
      ok = false;
  }
  return ok ? n : 0;
}

}  // namespace

std::size_t utf8_incomplete_tail(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the lead byte of the last character.
  std::size_t i = s.size(), back = 0;
  while (i > 0 && back < 3 && is_cont(static_cast<unsigned char>(s[i - 1]))) --i, ++back;
  if (i == 0) return 0;
  const int need = utf8_len(static_cast<unsigned char>(s[i - 1]));
  const std::size_t have = back + 1;
  return need > 1 && have < static_cast<std::size_t>(need) ? have : 0;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (const int n = utf8_char_at(s, i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

utf8_report utf8_scan(std::string_view s) {
  utf8_report r;
  r.bytes = s.size();
  for (std::size_t i = 0; i < s.size();) {
    const int n = utf8_char_at(s, i);
    r.invalid += n == 0;
    r.nul += s[i] == '\0';
    i += n ? n : 1;
  }
  return r;
}

std::string check_training_text(std::string_view text, const std::string& name, double max_share,
                                std::string_view force) {
  const utf8_report r = utf8_scan(text);
  if (r.invalid + r.nul == 0) return {};
  const std::string what = fmt::format(
      "corpus {}: {:.3g}% of its bytes are not valid UTF-8 text ({} invalid, {} NUL, of {})", name,
      100 * r.bad_share(), r.invalid, r.nul, r.bytes);
  if (r.bad_share() > max_share)
    fail("{}, more than the {:.3g}% allowed: is it a binary file or another encoding? {}", what,
         100 * max_share, force);
  return what + "; they are tokenized as raw bytes";
}

text_stream::text_stream(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string text_stream::push(std::string_view bytes) {
  if (stopped_) return {};
  pending_.append(bytes);
  // A stop string anywhere in what is held ends the text before it (earliest match wins).
  std::size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return utf8_sanitize(out);
  }
  // Hold back the longest suffix that is a proper prefix of a stop string, and an incomplete
  // character.
  std::size_t hold = utf8_incomplete_tail(pending_);
  for (const auto& s : stops_) {
    for (std::size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k) {
      if (std::string_view(pending_).substr(pending_.size() - k) ==
          std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return utf8_sanitize(out);
}

std::string text_stream::finish() {
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace zf
