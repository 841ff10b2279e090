#pragma once
// safetensors reader (mmap, validated) and writer (atomic).
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian u64 N, then N bytes of
// UTF-8 JSON header (starts with '{', may be right-padded with spaces), then the data section.
// The header maps tensor names to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}
// with offsets relative to the start of the data section, plus an optional "__metadata__" object
// of string -> string. Data is raw, row-major, little-endian.
//
// Reader: open() validates everything before returning (header length, JSON, dtype, shape,
// element size x shape == byte span, offsets inside the data section, no two tensors overlap,
// no duplicate names); every violation throws zf::error naming the file and, where there is one,
// the tensor. Tensor data points into a read-only private mapping that lives as long as the
// safetensors_file (moving it keeps the pointers valid). Files written by write_safetensors (and
// by the Hugging Face library) have every tensor aligned to its element size; other files may
// not, so read through memcpy or the to_f32/to_i32 helpers rather than casting `data`.
//
// Writer: validates, orders tensors by element size (largest first, otherwise in the given order)
// so each is aligned, pads the header with spaces to a multiple of 8, writes `path.tmp`, fsyncs,
// renames over `path` and fsyncs the directory.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "storage/fs_util.hpp"

namespace zf::storage {

// Bytes per element of a safetensors dtype ("F32" -> 4, "BF16" -> 2, "BOOL" -> 1, ...); 0 if the
// dtype is unknown. Known: BOOL U8 I8 F8_E5M2 F8_E4M3 U16 I16 F16 BF16 U32 I32 F32 U64 I64 F64.
std::size_t dtype_size(std::string_view dtype);

struct st_tensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "I32", "I64", "U8", ...
  std::vector<int64_t> shape;
  const std::byte* data;  // into the mapping; may be unaligned in foreign files
  std::size_t nbytes;
};

class safetensors_file {  // read-only, mmap-backed, movable
 public:
  static safetensors_file open(const std::filesystem::path& p);
  // The same checks on a whole file already in memory (the fuzzer's entry point, fuzz/): the
  // tensors point into `bytes`, which the object keeps; name stands for the file in messages.
  static safetensors_file from_bytes(std::vector<std::byte> bytes, const std::string& name);

  safetensors_file(safetensors_file&&) = default;
  safetensors_file& operator=(safetensors_file&&) = default;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file() = default;

  // In file order (by data offset).
  const std::vector<st_tensor>& tensors() const { return tensors_; }
  const st_tensor* find(std::string_view name) const;  // nullptr if absent
  const st_tensor& at(std::string_view name) const;    // zf::error naming file+tensor if absent
  // F32/F16/BF16/F64 -> float; other dtypes throw.
  std::vector<float> to_f32(std::string_view name) const;
  // Integer dtypes (I8..I64, U8..U64) -> int32; a value outside int32 throws naming the element.
  std::vector<int32_t> to_i32(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // __metadata__
  const std::filesystem::path& path() const { return path_; }

 private:
  safetensors_file() = default;
  // Validates the header of the file at [base, base + size) (size >= 8) and fills f's tables.
  static void parse(safetensors_file& f, const std::string& file, const std::byte* base,
                    std::size_t size);
  std::filesystem::path path_;
  mapped_file map_;               // open(): the whole file, read-only (storage/fs_util)
  std::vector<std::byte> owned_;  // from_bytes: the file's bytes (tensors point into them)
  std::vector<st_tensor> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

struct st_write {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data;
  std::size_t nbytes;
};

// Writes atomically: path.tmp, fsync, rename. Header padded to 8 bytes as the spec requires.
// Throws zf::error naming the file (and tensor) on invalid input or I/O failure; on failure the
// destination is untouched and the temporary file removed.
void write_safetensors(const std::filesystem::path& p, const std::vector<st_write>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace zf::storage
