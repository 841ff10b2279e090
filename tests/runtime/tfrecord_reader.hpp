#pragma once
// A little TensorBoard event file reader for the tests, written apart from the writer
// (runtime/monitor/tensorboard): its own bit-by-bit CRC32C (no table, no Boost), its own
// TFRecord framing and protobuf decoding, so a test that reads back what the writer wrote checks
// the format, not the writer against itself. Records:
//   uint64 length LE | uint32 masked crc32c(length bytes) | data | uint32 masked crc32c(data)
// and data a tensorflow.Event: wall_time = 1 (double), step = 2 (int64), file_version = 3
// (string), summary = 5 { value = 1 { tag = 1 (string), simple_value = 2 (float) } }.
// Unknown fields are skipped by wire type, as protobuf does. Any damage (a cut record, a CRC
// that does not match, a malformed field) stops reading and sets `error` to what and where.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zf::testing::tfrecord {

inline uint32_t crc32c_bitwise(std::string_view bytes) {  // reflected polynomial 0x82F63B78
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

inline uint32_t masked(uint32_t c) {
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

inline uint64_t le(std::string_view b, std::size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(static_cast<unsigned char>(b[at + i])) << (8 * i);
  return v;
}

struct event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> values;  // (tag, simple_value)
};

struct contents {
  std::vector<event> events;
  std::string error;  // empty: every byte read as whole, checked records
};

// One protobuf message's fields, in order: calls on_field(number, wire, varint, bytes) where
// varint holds varint and fixed values and bytes length-delimited ones. False on malformed input.
template <class F>
bool each_field(std::string_view m, F&& on_field) {
  std::size_t p = 0;
  auto varint = [&](uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= m.size()) return false;
      const auto b = static_cast<unsigned char>(m[p++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  while (p < m.size()) {
    uint64_t k = 0, v = 0;
    if (!varint(k)) return false;
    const int wire = int(k & 7), number = int(k >> 3);
    std::string_view bytes;
    if (wire == 0) {
      if (!varint(v)) return false;
    } else if (wire == 1 || wire == 5) {
      const std::size_t n = wire == 1 ? 8 : 4;
      if (m.size() - p < n) return false;
      v = le(m, p, int(n));
      p += n;
    } else if (wire == 2) {
      if (!varint(v) || v > m.size() - p) return false;
      bytes = m.substr(p, v);
      p += v;
    } else {
      return false;  // groups (3, 4) are not in these messages
    }
    if (!on_field(number, wire, v, bytes)) return false;
  }
  return true;
}

inline bool decode_value(std::string_view m, event& e) {
  std::pair<std::string, float> tv{"", 0.f};
  const bool ok = each_field(m, [&](int n, int wire, uint64_t v, std::string_view b) {
    if (n == 1 && wire == 2) tv.first = std::string(b);
    if (n == 2 && wire == 5) {
      const auto bits = static_cast<uint32_t>(v);
      std::memcpy(&tv.second, &bits, 4);
    }
    return true;
  });
  e.values.push_back(std::move(tv));
  return ok;
}

inline bool decode_event(std::string_view m, event& e) {
  return each_field(m, [&](int n, int wire, uint64_t v, std::string_view b) {
    if (n == 1 && wire == 1) std::memcpy(&e.wall_time, &v, 8);
    if (n == 2 && wire == 0) e.step = static_cast<int64_t>(v);
    if (n == 3 && wire == 2) e.file_version = std::string(b);
    if (n == 5 && wire == 2)
      return each_field(b, [&](int sn, int sw, uint64_t, std::string_view sb) {
        return !(sn == 1 && sw == 2) || decode_value(sb, e);
      });
    return true;
  });
}

inline contents read_events(std::string_view f) {
  contents out;
  std::size_t p = 0;
  while (p < f.size()) {
    const std::string at =
        "record " + std::to_string(out.events.size()) + " at byte " + std::to_string(p) + ": ";
    if (f.size() - p < 12) {
      out.error = at + "cut in its length header";
      return out;
    }
    const uint64_t n = le(f, p, 8);
    if (uint32_t(le(f, p + 8, 4)) != masked(crc32c_bitwise(f.substr(p, 8)))) {
      out.error = at + "length CRC mismatch";
      return out;
    }
    if (f.size() - p - 12 < n + 4) {
      out.error = at + "cut: " + std::to_string(n) + " data bytes announced";
      return out;
    }
    const std::string_view data = f.substr(p + 12, n);
    if (uint32_t(le(f, p + 12 + n, 4)) != masked(crc32c_bitwise(data))) {
      out.error = at + "data CRC mismatch";
      return out;
    }
    event e;
    if (!decode_event(data, e)) {
      out.error = at + "malformed Event protobuf";
      return out;
    }
    out.events.push_back(std::move(e));
    p += 12 + n + 4;
  }
  return out;
}

inline std::string slurp_binary(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The event files of a folder (events.out.tfevents.*), sorted by name.
inline std::vector<std::filesystem::path> event_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace zf::testing::tfrecord
