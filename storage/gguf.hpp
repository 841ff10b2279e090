#pragma once
// GGUF reader (mmap, validated) and writer (atomic): the file format of llama.cpp / ggml.
//
// Format (ggml's docs/gguf.md), all little-endian:
//   "GGUF" | u32 version (2 or 3) | u64 tensor_count | u64 metadata_kv_count
//   metadata_kv_count x (string key, u32 value type, value)
//   tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset)
//   zero padding to general.alignment (default 32), then the data section.
// A string is a u64 byte length then the bytes (no NUL). A value is one of 13 types (gguf_type);
// an array is u32 element type, u64 count, then the elements (arrays may nest). dims[0] (ggml's
// ne[0]) is the innermost, contiguous dimension: a PyTorch [rows, cols] weight is {cols, rows}.
// A tensor's offset is relative to the data section and a multiple of the alignment; its size is
// n_elements / block * block_bytes of its ggml type (ggml_type_info), ne[0] a whole number of
// blocks.
//
// Reader: open() validates everything before returning (magic, version, counts against the bytes
// left, every length field, value types, bools 0/1, no duplicate keys or tensor names,
// general.alignment a u32 power of two, dims, type, size, offset alignment, data inside the file,
// no two tensors overlapping); every violation throws zf::error naming the file and, where there
// is one, the key or tensor. Version 1 (u32 counts) is refused, as is a big-endian file (its
// version reads as 0x03000000 here). Tensor data points into a read-only private mapping that
// lives as long as the gguf_file (moving it keeps the pointers valid), aligned to the file's
// alignment relative to the mapping's start.
//
// Writer: version 3, metadata in the given order, tensor infos in the given order, zero padding
// to the alignment, the data laid out in that order with each tensor padded to the alignment (the
// last too): the bytes ggml's gguf_write_to_file writes for the same content. Writes `path.tmp`,
// fsyncs, renames over `path`, fsyncs the directory.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/fs_util.hpp"

namespace zf::storage {

// ---- ggml tensor types ---------------------------------------------------------------------

struct ggml_type_desc {
  const char* name;  // "F32", "Q4_0", "Q6_K", "BF16", ...
  uint32_t block;    // elements per block (1 for F32/F16/BF16/I8..F64)
  uint32_t bytes;    // bytes per block
};
// The ggml type with id `type` (F32 = 0, F16 = 1, Q4_0 = 2, ..., BF16 = 30, ..., Q2_0 = 42);
// nullptr for an id ggml never had or has removed (4, 5, 31-33, 36-38, >= 43).
const ggml_type_desc* ggml_type_info(uint32_t type);

namespace ggml_types {  // the ids named in the code and tests (ggml.h enum ggml_type)
inline constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
                          Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
                          Q8_K = 15, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30;
}

// Bytes of a tensor of `type` with dims (ne[0] first; no dims = a scalar of 1 element); nullopt
// when the type is unknown, a dim exceeds INT64_MAX, ne[0] is not a whole number of blocks or the
// size overflows.
std::optional<uint64_t> ggml_nbytes(uint32_t type, std::span<const uint64_t> dims);

// ---- metadata values -----------------------------------------------------------------------

enum class gguf_type : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
std::string_view gguf_type_name(gguf_type t);  // "uint8", ..., "array"; "unknown" otherwise

// One metadata value: a scalar, a string or a typed array (of scalars, strings or arrays).
// Built with the factories; fixed-size values keep their little-endian bytes, so == compares
// floats bit for bit.
class gguf_value {
 public:
  gguf_value() = default;  // uint8 0

  static gguf_value u8(uint8_t v);
  static gguf_value i8(int8_t v);
  static gguf_value u16(uint16_t v);
  static gguf_value i16(int16_t v);
  static gguf_value u32(uint32_t v);
  static gguf_value i32(int32_t v);
  static gguf_value f32(float v);
  static gguf_value boolean(bool v);
  static gguf_value string(std::string v);
  static gguf_value u64(uint64_t v);
  static gguf_value i64(int64_t v);
  static gguf_value f64(double v);
  // Arrays. T: uint8_t int8_t uint16_t int16_t uint32_t int32_t float uint64_t int64_t double.
  template <class T>
  static gguf_value array(const std::vector<T>& v);
  static gguf_value bool_array(const std::vector<bool>& v);
  static gguf_value string_array(std::vector<std::string> v);
  // An array of arrays (each item must itself be an array; their element types may differ).
  static gguf_value array_of_arrays(std::vector<gguf_value> v);

  gguf_type type() const { return type_; }
  gguf_type elem_type() const { return elem_; }  // arrays: the elements' type
  bool is_array() const { return type_ == gguf_type::array; }
  std::size_t size() const;  // arrays: element count; 1 otherwise

  // nullopt (nullptr) when the value is not of that kind.
  std::optional<int64_t> as_int() const;   // any integer type; a uint64 above INT64_MAX: nullopt
  std::optional<double> as_float() const;  // float32 or float64
  std::optional<bool> as_bool() const;
  const std::string* as_string() const;
  const std::vector<std::string>* as_strings() const;    // array of strings
  std::optional<std::vector<int64_t>> as_ints() const;   // array of integers (as as_int)
  std::optional<std::vector<double>> as_floats() const;  // array of float32 or float64
  const std::vector<gguf_value>* as_arrays() const;      // array of arrays

  // Fixed-size scalars: their bytes (1 to 8), zero-extended. Fixed-size arrays: all elements'.
  uint64_t scalar_bits() const { return bits_; }
  const std::vector<std::byte>& array_bytes() const { return raw_; }

  bool operator==(const gguf_value&) const = default;

 private:
  friend struct gguf_codec;
  gguf_type type_ = gguf_type::u8;
  gguf_type elem_ = gguf_type::u8;
  uint64_t bits_ = 0;                 // fixed-size scalar
  std::string str_;                   // string
  std::vector<std::byte> raw_;        // array of a fixed-size type: count x size bytes
  std::vector<std::string> strings_;  // array of strings
  std::vector<gguf_value> arrays_;    // array of arrays
};

struct gguf_kv {
  std::string key;
  gguf_value value;
  bool operator==(const gguf_kv&) const = default;
};

// Deepest array nesting read or written (an array of scalars is depth 1).
inline constexpr int kGgufMaxArrayDepth = 16;

// ---- reader --------------------------------------------------------------------------------

struct gguf_tensor {
  std::string name;
  uint32_t type;               // ggml type id (ggml_type_info)
  std::vector<uint64_t> dims;  // ne[0] first (innermost); 0 to 4 entries
  uint64_t offset;             // from the start of the data section
  const std::byte* data;       // into the mapping
  std::size_t nbytes;
  uint64_t n_elements() const;  // product of dims (1 for none)
};

class gguf_file {  // read-only, mmap-backed, movable
 public:
  static gguf_file open(const std::filesystem::path& p);
  // The same checks on a whole file already in memory (tests, the fuzzer): the tensors point into
  // the bytes, which the object keeps; name stands for the file in messages.
  static gguf_file from_bytes(std::vector<std::byte> bytes, const std::string& name);
  static gguf_file from_bytes(std::string_view bytes, const std::string& name);  // copies

  gguf_file(gguf_file&&) = default;
  gguf_file& operator=(gguf_file&&) = default;
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;
  ~gguf_file() = default;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  const std::filesystem::path& path() const { return path_; }

  // Metadata in file order.
  const std::vector<gguf_kv>& metadata() const { return metadata_; }
  std::vector<std::string_view> keys() const;
  bool has(std::string_view key) const { return find_value(key) != nullptr; }
  const gguf_value* find_value(std::string_view key) const;  // nullptr if absent
  const gguf_value& value(std::string_view key) const;       // zf::error naming file+key if absent
  // Typed getters: zf::error naming the file and key when the key is absent or its value is of
  // another type (the message says which). get_int reads any integer type, get_float float32 or
  // float64, get_ints an array of any integer type, get_floats an array of float32 or float64.
  std::string get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_strings(std::string_view key) const;
  std::vector<int64_t> get_ints(std::string_view key) const;
  std::vector<double> get_floats(std::string_view key) const;

  // Tensors in header order.
  const std::vector<gguf_tensor>& tensors() const { return tensors_; }
  const gguf_tensor* find(std::string_view name) const;  // nullptr if absent
  const gguf_tensor& at(std::string_view name) const;    // zf::error naming file+tensor if absent

 private:
  gguf_file() = default;
  static void parse(gguf_file& f, const std::string& file, const std::byte* base, std::size_t size);
  [[noreturn]] void wrong_type(std::string_view key, const gguf_value& v,
                               std::string_view wanted) const;
  std::filesystem::path path_;
  mapped_file map_;               // open(): the whole file, read-only (storage/fs_util)
  std::vector<std::byte> owned_;  // from_bytes: the file's bytes (tensors point into them)
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<gguf_kv> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;  // key -> position in metadata_
  std::vector<gguf_tensor> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
};

// ---- writer --------------------------------------------------------------------------------

struct gguf_write {
  std::string name;            // 1 to 63 bytes (ggml's GGML_MAX_NAME is 64 with the NUL)
  uint32_t type;               // ggml type id
  std::vector<uint64_t> dims;  // ne[0] first; at most 4
  const void* data;
  std::size_t nbytes;  // must equal ggml_nbytes(type, dims)
};

// Writes a version-3 GGUF file atomically (path.tmp, fsync, rename, fsync of the folder).
// alignment: a power of two; when it is not 32 and metadata has no general.alignment, a
// "general.alignment" uint32 is appended to the metadata (present, it must be that uint32).
// Throws zf::error naming the file (and key or tensor) on invalid input (empty, duplicate or
// over-long keys and names, arrays nested deeper than kGgufMaxArrayDepth, unknown types, more than
// 4 dims, ne[0] not a whole number of blocks, nbytes disagreeing with type and dims) or I/O
// failure; on failure the destination is untouched and the temporary file removed.
void write_gguf(const std::filesystem::path& p, const std::vector<gguf_kv>& metadata,
                const std::vector<gguf_write>& tensors, uint32_t alignment = 32);

}  // namespace zf::storage
