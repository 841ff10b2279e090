#include "runtime/text/text_stream.hpp"

#include <algorithm>

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
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
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
