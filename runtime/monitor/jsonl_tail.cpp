#include "runtime/monitor/jsonl_tail.hpp"

#include <fstream>
#include <system_error>

namespace zf::monitor {

jsonl_tail::jsonl_tail(std::filesystem::path file, std::size_t max_read, std::size_t max_line)
    : file_(std::move(file)),
      max_read_(std::max<std::size_t>(max_read, 1)),
      max_line_(std::max<std::size_t>(max_line, 1)) {}

void jsonl_tail::take_line(std::string_view line, tail_batch& out) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.find_first_not_of(" \t") == std::string_view::npos) return;  // blank: not counted
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    ++out.skipped;
    ++skipped_;
    return;
  }
  out.rows.push_back(std::move(j));
  ++rows_;
}

tail_batch jsonl_tail::poll() {
  tail_batch out;
  std::error_code ec;
  const auto size = std::filesystem::file_size(file_, ec);
  if (ec) return out;  // not there (yet, or any more)
  const uint64_t seen = offset_ + pending_.size() + discarded_;
  if (size < seen) {  // rewritten shorter: start again
    offset_ = 0;
    pending_.clear();
    discarding_ = false;
    discarded_ = 0;
    out.reset = true;
  }
  const uint64_t from = offset_ + pending_.size() + discarded_;
  if (size <= from) return out;
  out.more = size - from > max_read_;
  std::ifstream f(file_, std::ios::binary);
  if (!f) return out;
  f.seekg(static_cast<std::streamoff>(from));
  buf_.resize(static_cast<std::size_t>(std::min<uint64_t>(size - from, max_read_)));
  f.read(buf_.data(), static_cast<std::streamsize>(buf_.size()));
  const std::size_t got = static_cast<std::size_t>(f.gcount());
  std::string_view data(buf_.data(), got);
  std::size_t start = 0;
  for (std::size_t nl; (nl = data.find('\n', start)) != std::string_view::npos; start = nl + 1) {
    if (discarding_) {  // the end of an over-long line: already counted
      discarding_ = false;
      discarded_ = 0;
    } else if (pending_.empty()) {
      take_line(data.substr(start, nl - start), out);
    } else {
      pending_.append(data.substr(start, nl - start));
      take_line(pending_, out);
      pending_.clear();
    }
    offset_ = from + nl + 1;
  }
  const std::string_view rest = data.substr(start);
  if (discarding_) {
    discarded_ += rest.size();
  } else if (pending_.size() + rest.size() > max_line_) {  // too long to hold: drop it
    ++out.skipped;
    ++skipped_;
    discarding_ = true;
    discarded_ = pending_.size() + rest.size();
    pending_.clear();
  } else {
    pending_.append(rest);
  }
  // A backlog's big reads are over: give the buffer back (a console follows many files, each
  // of which would otherwise keep its largest read, up to max_read, for good).
  if (!out.more && buf_.capacity() > (std::size_t(1) << 20)) std::vector<char>().swap(buf_);
  return out;
}

std::size_t jsonl_tail::finish() {
  if (discarding_) {  // counted when it began
    offset_ += discarded_;
    discarding_ = false;
    discarded_ = 0;
    return 0;
  }
  if (pending_.find_first_not_of(" \t\r") == std::string::npos) {
    pending_.clear();
    return 0;
  }
  offset_ += pending_.size();
  pending_.clear();
  ++skipped_;
  return 1;
}

}  // namespace zf::monitor
