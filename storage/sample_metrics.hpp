#pragma once
// Per-sample difficulty metrics of a tokenized corpus (curriculum learning, issue 13), written as
// index files and read back through mmap.
//
// A sample is a fixed window of the shard's train head (its first train_tokens tokens): sample i
// covers tokens [i*seq_len, i*seq_len + seq_len + 1) (inputs plus the last target), for
// i in [0, sample_count(train_tokens, seq_len)); only whole windows count.
//
// Index files, in an output folder, per metric (little-endian, an 88-byte header then the data):
//   <metric>.values  header, then float64[count]: the metric value of each sample
//   <metric>.order   header, then uint64[count]: sample ids sorted ascending by value, ties by id
// Header:
//   0  char[8]   magic "ZFMIDX1\0"
//   8  u32       version (1)
//  12  u32       kind: 1 = values, 2 = order
//  16  char[32]  metric name, NUL-padded
//  48  u64       seq_len
//  56  u64       count of samples
//  64  u64       train_tokens
//  72  u64       corpus fingerprint: the shard file's size in bytes
//  80  u32       corpus fingerprint: CRC32 (zlib) of the shard file's bytes
//  84  u32       reserved (0)
// Each file is written to a temporary name, fsynced and renamed: a reader never sees half a file.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/fs_util.hpp"
#include "storage/token_shard.hpp"

namespace zf::storage {

// Whole windows of seq_len + 1 tokens, stepping by seq_len, in the first train_tokens tokens.
std::size_t sample_count(std::size_t train_tokens, int seq_len);

// DeepSpeed's vocab_rarity: per sample, the mean over its seq_len + 1 tokens of -log p(token),
// p = the token's unigram frequency over the whole train head. threads = 0 means
// hardware_concurrency. Returns [sample_count] values, bit-identical for any thread count (each
// sample is summed by one thread, in token order, in double). zf::error naming the shard when
// train_tokens exceeds it, seq_len < 1 or an id is outside its vocab.
std::vector<double> vocab_rarity(const token_shard& shard, std::size_t train_tokens, int seq_len,
                                 unsigned threads = 0);

// The custom metric: one number per line of `file`, in sample order. zf::error naming the file
// (and the line) for a non-number, NaN or inf, or a count other than `expected`.
std::vector<double> read_custom_metric(const std::filesystem::path& file, std::size_t expected);

// Sample ids sorted ascending by value, ties by id (a stable, deterministic order).
std::vector<uint64_t> argsort_values(std::span<const double> values);

// Writes <dir>/<metric>.values and <dir>/<metric>.order for values[sample_count] of this corpus.
// The shard's bytes are checksummed once here (the fingerprint). metric: 1-31 characters of
// [a-z0-9_]. zf::error for a wrong value count or a NaN/inf value.
void write_metric_index(const std::filesystem::path& dir, std::string_view metric,
                        const token_shard& shard, std::size_t train_tokens, int seq_len,
                        std::span<const double> values);

// The two index files of one metric, mmap'ed read-only.
class metric_index {
 public:
  // zf::error naming the file for a missing, foreign (bad magic or kind), newer-version or
  // truncated file, another metric's file, an index built for another corpus (fingerprint,
  // train_tokens or seq_len), or an order file that is not the argsort of the values.
  static metric_index open(const std::filesystem::path& dir, std::string_view metric,
                           const token_shard& shard, std::size_t train_tokens, int seq_len);
  metric_index(metric_index&&) noexcept = default;
  metric_index& operator=(metric_index&&) noexcept = default;

  std::size_t size() const { return count_; }
  double value(std::size_t i) const { return values_[i]; }   // metric value of sample i
  uint64_t order(std::size_t k) const { return order_[k]; }  // id of the k-th easiest sample
  const std::string& metric() const { return metric_; }

 private:
  metric_index() = default;
  std::string metric_;
  mapped_file values_map_, order_map_;
  const double* values_ = nullptr;
  const uint64_t* order_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace zf::storage
