#pragma once
// The training batches a run's data-efficiency settings ask for (issue 13), over a dataset: at
// each optimizer step the data_schedule (runtime/train) says how many rows of how many tokens
// each rank's micro-batch has (seqlen curriculum), how hard its samples may be (a pool of the
// easiest samples by a metric index, storage/sample_metrics) and how many tokens random-LTD
// keeps. Batches stay pure functions of (seed, micro-batch, rank), so prefetching and resuming
// need nothing else; with every setting off they are the dataset's own batches, bit for bit.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include "runtime/train/data_schedule.hpp"
#include "storage/dataset.hpp"
#include "storage/sample_metrics.hpp"

namespace zf::storage {

class train_batches {
 public:
  // pool: the metric index of the pool curriculum (required when schedule.pool_metric() is set,
  // built for this dataset's train head and train.seq_len). zf::error naming the metric's
  // min_difficulty when the pool at step 0 is empty.
  train_batches(std::shared_ptr<const dataset> data, std::shared_ptr<const data_schedule> schedule,
                std::shared_ptr<const metric_index> pool, uint64_t seed, int batch_size,
                int grad_accum);

  // Rows of global micro-batch `micro` (optimizer step micro / grad_accum) for global `rank`:
  // rows [rank * rows, rank * rows + rows) of that micro-batch's global batch.
  void fill_train(int64_t micro, int rank, batch& out) const;
  // Validation batch `index`: always batch_size full-length windows, so every curriculum is
  // measured on the same text.
  void fill_val(int64_t index, batch& out) const { data_->fill_val(index, batch_, out); }

  // Samples the pool holds at a difficulty (every sample without a pool curriculum).
  int64_t pool_size(int difficulty) const;
  const dataset& data() const { return *data_; }

 private:
  std::shared_ptr<const dataset> data_;
  std::shared_ptr<const data_schedule> schedule_;
  std::shared_ptr<const metric_index> pool_;
  uint64_t seed_;
  int batch_, accum_;
};

// The pool curriculum's metric index for a run (null without one): the folder
// data.curriculum.<metric>.index names (zf::error naming it when missing or built for another
// corpus or seq_len), or, for vocab_rarity with no folder given, one computed once and cached
// under data_dir/cache (a custom metric needs its folder: `zeroflow data analyze --metric custom`).
std::shared_ptr<const metric_index> open_pool_index(const data_schedule& schedule,
                                                    const curriculum_config& cur,
                                                    const std::filesystem::path& shard_path,
                                                    const dataset& data,
                                                    const std::filesystem::path& data_dir);

}  // namespace zf::storage
