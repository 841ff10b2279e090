#pragma once
// Token shard: a flat file of token ids with a fixed 32-byte header, read through mmap.
//   0  char[8]  magic "ZFTOKSHD"
//   8  u32      version (1)
//  12  u32      dtype: 1 = uint16, 2 = uint32 (little-endian)
//  16  u64      count of tokens
//  24  u32      vocab size the ids were made for
//  28  u32      reserved (0)
//  32  ids
// A shard whose size disagrees with its header is refused (a truncated copy never trains).
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "storage/fs_util.hpp"

namespace zf::storage {

class token_shard {
 public:
  static token_shard open(const std::filesystem::path& p);  // zf::error naming the file
  token_shard(token_shard&&) noexcept = default;
  token_shard& operator=(token_shard&&) noexcept = default;

  std::size_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_; }
  int operator[](std::size_t i) const {
    return dtype_ == 1 ? reinterpret_cast<const uint16_t*>(ids_)[i]
                       : static_cast<int>(reinterpret_cast<const uint32_t*>(ids_)[i]);
  }
  // Copies ids [begin, begin+n) into out.
  void read(std::size_t begin, std::size_t n, int* out) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  token_shard() = default;
  std::filesystem::path path_;
  mapped_file map_;
  const void* ids_ = nullptr;
  std::size_t count_ = 0;
  uint32_t dtype_ = 1, vocab_ = 0;
};

// Writes ids atomically (temp file, fsync, rename); uint16 when every id fits.
void write_token_shard(const std::filesystem::path& p, std::span<const int> ids, uint32_t vocab);

}  // namespace zf::storage
