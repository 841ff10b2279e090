#include "runtime/monitor/tensorboard.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <bit>
#include <boost/crc.hpp>
#include <chrono>
#include <system_error>

#include "runtime/core/clock.hpp"

namespace zf::monitor {
namespace {

// Protobuf wire types and the field keys of the messages we write ((field << 3) | wire type).
constexpr uint8_t wire_varint = 0, wire_fixed64 = 1, wire_bytes = 2, wire_fixed32 = 5;
constexpr uint8_t key(int field, uint8_t wire) {
  return static_cast<uint8_t>(field << 3 | wire);
}
constexpr uint8_t event_wall_time = key(1, wire_fixed64), event_step = key(2, wire_varint),
                  event_file_version = key(3, wire_bytes), event_summary = key(5, wire_bytes),
                  summary_value = key(1, wire_bytes), value_tag = key(1, wire_bytes),
                  value_simple = key(2, wire_fixed32);

std::size_t varint_size(uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

void put_varint(std::string& out, uint64_t v) {  // 7 bits a byte, low first, high bit: more
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
}

void put_fixed(std::string& out, uint64_t v, int bytes) {  // little-endian, whatever the host
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_bytes_field(std::string& out, uint8_t field_key, std::string_view bytes) {
  out.push_back(static_cast<char>(field_key));
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Event's first fields. proto3 leaves out fields at their default (0), as TensorFlow writes them.
void put_event_head(std::string& out, double wall_time, int64_t step) {
  const uint64_t wall_bits = std::bit_cast<uint64_t>(wall_time);
  if (wall_bits != 0) {
    out.push_back(static_cast<char>(event_wall_time));
    put_fixed(out, wall_bits, 8);
  }
  if (step != 0) {
    out.push_back(static_cast<char>(event_step));
    put_varint(out, static_cast<uint64_t>(step));  // negative: ten bytes, as protobuf's int64
  }
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  std::string h = buf;
  for (char& c : h)
    if (c == '/') c = '_';
  return h;
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(bytes.data(), bytes.size());
  return crc.checksum();
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

tensorboard_writer::tensorboard_writer(const std::filesystem::path& dir, std::size_t flush_bytes)
    : flush_bytes_(flush_bytes) {
  const double now = unix_now();
  path_ = dir / fmt::format("events.out.tfevents.{}.{}", static_cast<int64_t>(now), host_name());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  f_ = std::fopen(path_.c_str(), "ab");  // a resumed run in the same second: records follow on
  event_.reserve(256);
  pending_.reserve(flush_bytes_ + 512);
  put_event_head(event_, now, 0);
  put_bytes_field(event_, event_file_version, "brain.Event:2");
  append_record();
  flush();  // a valid event file from the start: TensorBoard lists the run at once
}

tensorboard_writer::~tensorboard_writer() {
  flush();
  if (f_) std::fclose(f_);
}

void tensorboard_writer::add_scalar(std::string_view tag, int64_t step, double value,
                                    double wall_time_unix) {
  // Sizes first: Summary and Value are length-prefixed, and the buffer is written front to back.
  const std::size_t value_size = 1 + varint_size(tag.size()) + tag.size() + 1 + 4;
  const std::size_t summary_size = 1 + varint_size(value_size) + value_size;
  event_.clear();
  put_event_head(event_, wall_time_unix, step);
  event_.push_back(static_cast<char>(event_summary));
  put_varint(event_, summary_size);
  event_.push_back(static_cast<char>(summary_value));
  put_varint(event_, value_size);
  put_bytes_field(event_, value_tag, tag);
  event_.push_back(static_cast<char>(value_simple));  // in a oneof: written even when 0
  put_fixed(event_, std::bit_cast<uint32_t>(static_cast<float>(value)), 4);
  append_record();
  if (pending_.size() >= flush_bytes_) flush();
}

void tensorboard_writer::append_record() {
  std::string_view data = event_;
  const std::size_t at = pending_.size();
  put_fixed(pending_, data.size(), 8);
  const uint32_t length_crc = masked_crc32c(std::string_view(pending_).substr(at, 8));
  put_fixed(pending_, length_crc, 4);
  pending_.append(data);
  put_fixed(pending_, masked_crc32c(data), 4);
}

void tensorboard_writer::flush() {
  if (pending_.empty()) return;
  if (!f_ || std::fwrite(pending_.data(), 1, pending_.size(), f_) != pending_.size() ||
      std::fflush(f_) != 0) {
    ++failures_;
    // Nothing more goes after a cut record (a reader stops there anyway): the file keeps what it
    // has, and later scalars count as failures too.
    if (f_) std::fclose(f_);
    f_ = nullptr;
  }
  pending_.clear();  // keeps its capacity
}

}  // namespace zf::monitor
