#pragma once
// The numbers of one run's metrics.jsonl, held column by column for the console (issue 11): one
// x per row (the row's "step", else its "t", else the row's index: the first row decides), and
// per key one float per row, NaN where the row lacks the key (val_loss, a checkpoint time). Keys
// are the row's numeric fields (booleans as 0/1); an object one level down is flattened with a
// dot ("reward.mean"). Dense columns cost 4 bytes per row and key (1M rows x 16 keys: 64 MB),
// half of a point list, and a column is scanned without chasing pointers.
//
// window() renders rows [begin, end) of every key as {"key": {"x": [...], "y": [...]}}, reduced
// to `buckets` min/max pairs per key (downsample.hpp's rule, rows without the key skipped), so
// its size is bounded by the chart's width, never by the run's length.
//
// Mixture-of-Experts runs also write per step "moe_load" (rows: MoE layers, columns: experts,
// each the fraction of the layer's token choices that expert got; rows may differ in length) and
// "moe_layers" (the layer id of each row). Arrays are no columns: only the latest moe_load is
// kept (moe()), with its x and layer ids (the row's index where moe_layers is missing or does not
// match), O(layers x experts) however long the run; moe_json() renders it for the console's
// heatmap as {"x": X, "layers": [...], "load": [[...], ...]}.
#include <cmath>
#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zf::monitor {

class run_series {
 public:
  static constexpr std::size_t max_keys = 128;  // more keys in a file are ignored (counted)
  static constexpr std::size_t max_moe_layers = 512, max_moe_experts = 4096;  // more are cut

  struct moe_load {
    std::size_t row = 0;  // the row that carried it
    double x = 0;
    std::vector<double> layers;            // one id per row of `load`
    std::vector<std::vector<float>> load;  // NaN where an entry was not a number
  };

  void add(const nlohmann::json& row);  // row: a JSON object
  void clear();                         // the file was rewritten: start over
  std::size_t rows() const { return x_.size(); }
  const std::string& x_key() const { return x_key_; }  // "step", "t" or "row"; "" before a row
  const std::vector<std::string>& keys() const { return keys_; }
  std::size_t ignored_keys() const { return ignored_; }
  // The last row's x, and the last value of `key` (NaN: none).
  double last_x() const { return x_.empty() ? std::nan("") : x_.back(); }
  double last(std::string_view key) const;
  // The x of row i, and the value of `key` at row i (NaN when absent or the key is unknown).
  double x_at(std::size_t i) const { return x_[i]; }
  double value_at(std::string_view key, std::size_t i) const;
  // Appends to `out` (a JSON text, no separators added) the object described above; keys with no
  // point in the window are left out.
  void window(std::size_t begin, std::size_t end, int buckets, std::string& out) const;
  std::size_t bytes() const;  // memory held by the columns
  // The latest row's moe_load (nullopt: no row had one since the last clear()).
  const std::optional<moe_load>& moe() const { return moe_; }
  // Appends moe() as the JSON object described above ("null" when there is none).
  void moe_json(std::string& out) const;

 private:
  int column(std::string_view key);  // index, created on first sight; -1 over max_keys
  void put(std::string_view key, double v);
  std::string x_key_;
  std::vector<double> x_;
  std::vector<std::string> keys_;
  std::vector<std::vector<float>> cols_;
  std::size_t ignored_ = 0;
  std::optional<moe_load> moe_;
  mutable std::vector<std::size_t> picked_;  // window(): reused row list
};

}  // namespace zf::monitor
