#pragma once
// Training data: a corpus (text or token shard) resolved to a token shard, split into a train
// head and a validation tail, and cut into [b, t+1] windows. A batch is a pure function of
// (seed, index), so resuming at step s needs nothing but s.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/batch.hpp"
#include "storage/token_shard.hpp"

namespace zf {
class tokenizer;
}

namespace zf::storage {

using batch = zf::token_batch;  // runtime/core/batch.hpp: what the train loop hands the ranks

// What prepare_corpus checks a text corpus against (check_training_text, runtime/text), and
// where its warning goes.
struct corpus_checks {
  double max_invalid_utf8 = 0.01;                // data.max_invalid_utf8
  std::function<void(const std::string&)> warn;  // a corpus partly not UTF-8; unset: dropped
};

// Resolves data.corpus: "moby-dick", "kjv-bible" or "sotu" (data_dir/<name>.txt), a folder (a
// sharded corpus: its .txt and .tok files in name order, concatenated into one cached shard),
// a UTF-8 .txt file (tokenized once
// and cached as data_dir/cache/<name>-<bytes>-<crc>[-<tokenizer_id>].tok; tokenizer_id "" is
// GPT-2) or a .tok shard. zf::error names the file; a text whose share of invalid UTF-8 and NUL
// bytes is above checks.max_invalid_utf8 is refused, naming the share.
std::filesystem::path prepare_corpus(const std::string& corpus,
                                     const std::filesystem::path& data_dir, const tokenizer& tok,
                                     const std::string& tokenizer_id = "",
                                     const corpus_checks& checks = {});

class dataset {
 public:
  dataset(token_shard shard, double val_fraction, int seq_len);
  std::size_t train_tokens() const { return train_end_; }
  std::size_t val_tokens() const { return shard_.size() - train_end_; }
  // Random windows of the train head; same (seed, index) -> same batch. Row r of global batch
  // `index` depends only on (seed, index, r), so N ranks taking rows [rank*b, rank*b+b) see
  // exactly the rows one rank with batch N*b sees (data-parallel equivalence).
  void fill_train(uint64_t seed, int64_t index, int b, batch& out) const {
    fill_train_rows(seed, index, 0, b, out);
  }
  void fill_train_rows(uint64_t seed, int64_t index, int row_begin, int rows, batch& out) const;
  // Consecutive windows of the validation tail (wrapping).
  void fill_val(int64_t index, int b, batch& out) const;

  int seq_len() const { return t_; }
  // Where row `row` of train batch (seed, index) starts when its window is t <= seq_len tokens:
  // a uniform draw over the train head seeded by (seed, index, row) alone.
  std::size_t random_start(uint64_t seed, int64_t index, int64_t row, int t) const;
  // Row `row` of out (shaped [b, t] by the caller) = tokens [start, start + t) as inputs and the
  // next ones as targets; start + t < train_tokens().
  void fill_window(std::size_t start, int t, int row, batch& out) const;

 private:
  token_shard shard_;
  std::size_t train_end_;
  int t_;
};

}  // namespace zf::storage
