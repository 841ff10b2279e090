#pragma once
// Private to storage/gguf.cpp, gguf_value.cpp and gguf_write.cpp (not installed, not included
// elsewhere): the limits, helpers and tensor size check the reader and writer share, the byte
// cursor the reader reads through, and gguf_codec, the friend of gguf_value that builds, encodes
// and decodes values (its members are defined in gguf_value.cpp).
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/gguf.hpp"

namespace zf::storage {

static_assert(std::endian::native == std::endian::little,
              "GGUF files are read as little-endian; big-endian hosts are not supported");

namespace gguf_detail {

inline constexpr std::size_t kMaxKeyBytes = 65535;  // the spec's limit on a key
inline constexpr uint32_t kMaxDims = 4;
inline constexpr std::string_view kAlignmentKey = "general.alignment";
// A count is checked against the bytes left before anything is allocated, but one entry in
// memory (a gguf_value, a gguf_tensor) is larger than its smallest encoding, so reservations are
// capped as well: past this, vectors grow only as entries are actually read.
inline constexpr uint64_t kMaxReserve = 1 << 16;

inline std::size_t capped(uint64_t n) {
  return static_cast<std::size_t>(std::min(n, kMaxReserve));
}

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

inline uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;  // callers keep x + a below 2^64
}

std::string dims_text(const std::vector<uint64_t>& dims);  // "[a, b, c]" (defined in gguf.cpp)

// The bytes a tensor takes, or the reason it cannot (for messages after "tensor 'x': ").
struct size_check {
  uint64_t bytes = 0;
  std::string problem;  // empty when fine
};

size_check tensor_size(uint32_t type, std::span<const uint64_t> dims);  // defined in gguf.cpp

// A read position in a file's bytes; every read is bounds-checked and fails naming the file.
struct cursor {
  const std::byte* base;
  std::size_t size;
  std::size_t pos;
  const std::string& file;

  std::size_t left() const { return size - pos; }
  void need(uint64_t n, std::string_view where, std::string_view what) const {
    if (n > left())
      fail(
          "gguf file '{}': {}: truncated: {} needs {} bytes at offset {} but the file has {} "
          "left",
          file, where, what, n, pos, left());
  }
  template <class T>
  T get(std::string_view where, std::string_view what) {
    need(sizeof(T), where, what);
    const T v = load<T>(base + pos);
    pos += sizeof(T);
    return v;
  }
  std::string str(std::string_view where, std::string_view what) {
    if (left() < 8)
      fail(
          "gguf file '{}': {}: truncated: {} length needs 8 bytes at offset {} but the file "
          "has {} left",
          file, where, what, pos, left());
    const auto n = get<uint64_t>(where, what);
    if (n > left())
      fail(
          "gguf file '{}': {}: {} length {} at offset {} runs past the end of the file ({} "
          "bytes left)",
          file, where, what, n, pos - 8, left());
    std::string s(reinterpret_cast<const char*>(base + pos), static_cast<std::size_t>(n));
    pos += static_cast<std::size_t>(n);
    return s;
  }
};

}  // namespace gguf_detail

// Builds and encodes values (a friend of gguf_value), and reads them from a file.
// Only gguf_value.cpp uses scalar and array (defined there).
struct gguf_codec {
  template <class T>
  static gguf_value scalar(gguf_type t, T v);
  template <class T>
  static gguf_value array(gguf_type elem, const std::vector<T>& v);
  static gguf_value strings(std::vector<std::string> s);
  static gguf_value arrays(std::vector<gguf_value> a);

  // Nesting depth of v (0 for a scalar), and whether every array of arrays holds only arrays.
  static int depth(const gguf_value& v, bool& ok);

  static void append_u32(std::string& out, uint32_t x);
  static void append_u64(std::string& out, uint64_t x);
  static void append_str(std::string& out, std::string_view s);
  // The value's bytes (without its type), as they follow the type in a file.
  static void encode(std::string& out, const gguf_value& v);

  // ---- reading ----
  using cursor = gguf_detail::cursor;
  static gguf_type read_type(cursor& c, std::string_view where, std::string_view what);
  static uint8_t check_bool(cursor& c, uint8_t b, std::string_view where);
  static gguf_value read(cursor& c, gguf_type t, std::string_view where, int depth);
};

}  // namespace zf::storage
