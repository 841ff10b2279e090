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

// How much of a text is not text: bytes that start no valid UTF-8 character (each one that
// utf8_sanitize replaces) and NUL bytes (valid UTF-8, but no text file holds them).
struct utf8_report {
  std::size_t bytes = 0, invalid = 0, nul = 0;
  double bad_share() const { return bytes ? double(invalid + nul) / double(bytes) : 0.0; }
};
utf8_report utf8_scan(std::string_view s);

// The check on a text about to be tokenized for training, `name` its file. Byte-level BPE
// tokenizes anything, so a binary file or a text in another encoding would train on noise
// without a word. Returns a warning naming the file and the share of bad bytes when there are
// any ("" when none); throws zf::error when that share is above max_share, `force` saying how to
// tokenize it anyway.
std::string check_training_text(std::string_view text, const std::string& name, double max_share,
                                std::string_view force);

}  // namespace zf
