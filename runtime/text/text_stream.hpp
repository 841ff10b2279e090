#pragma once
// Incremental detokenized text of one generated sequence, with stop strings. Bytes of new tokens
// go in; what comes out is safe to send now: complete UTF-8 characters (a byte-level BPE token
// can end inside a character) that cannot be the start of a stop string. When a stop string
// appears, the output ends right before it and the stream is stopped.
#include <string>
#include <string_view>
#include <vector>

namespace zf {

class text_stream {
 public:
  explicit text_stream(std::vector<std::string> stops = {});
  // Appends one token's bytes; returns the text that may be emitted now (maybe empty).
  std::string push(std::string_view bytes);
  // The end of the sequence (no stop matched): everything held back, with an incomplete UTF-8
  // tail replaced by U+FFFD.
  std::string finish();
  bool stopped() const { return stopped_; }
  std::size_t held() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

// Bytes at the end of s that start an incomplete UTF-8 character (0 if s ends on a boundary or
// with bytes that can never complete, which are then emitted as they are).
std::size_t utf8_incomplete_tail(std::string_view s);
// s with every invalid UTF-8 sequence replaced by U+FFFD (JSON needs valid UTF-8).
std::string utf8_sanitize(std::string_view s);

}  // namespace zf
