#include "runtime/monitor/run_series.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>

namespace zf::monitor {

namespace {

const float nan_f = std::nanf("");

// A number as JSON: the shortest form that reads back as the same value of its type (a float
// column's 3.2f prints 3.2, not 3.2000000476837158); non-finite values (an overflowed loss) as
// null so the text stays JSON.
template <class T>
void put_number(std::string& out, T v) {
  if (std::isfinite(v))
    fmt::format_to(std::back_inserter(out), "{}", v);
  else
    out += "null";
}

std::optional<double> number_of(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  return std::nullopt;
}

}  // namespace

int run_series::column(std::string_view key) {
  for (std::size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == key) return static_cast<int>(i);
  if (keys_.size() >= max_keys) return -1;
  keys_.emplace_back(key);
  cols_.emplace_back(x_.size(), nan_f);  // earlier rows lacked it
  return static_cast<int>(keys_.size() - 1);
}

void run_series::put(std::string_view key, double v) {
  const int c = column(key);
  if (c < 0) {
    ++ignored_;
    return;
  }
  cols_[c].back() = static_cast<float>(v);
}

void run_series::add(const nlohmann::json& row) {
  if (!row.is_object()) return;
  if (x_key_.empty()) x_key_ = row.contains("step") ? "step" : row.contains("t") ? "t" : "row";
  double x = static_cast<double>(x_.size());
  if (x_key_ != "row") {
    auto it = row.find(x_key_);
    if (it != row.end())
      if (auto v = number_of(*it)) x = *v;
  }
  x_.push_back(x);
  for (auto& c : cols_) c.push_back(nan_f);
  for (auto it = row.begin(); it != row.end(); ++it) {
    if (it.key() == x_key_) continue;
    if (auto v = number_of(it.value())) {
      put(it.key(), *v);
    } else if (it.value().is_object()) {
      for (auto in = it.value().begin(); in != it.value().end(); ++in)
        if (auto w = number_of(in.value())) put(it.key() + "." + in.key(), *w);
    }
  }
  auto load = row.find("moe_load");
  if (load != row.end() && load->is_array()) {
    moe_load m;
    m.row = x_.size() - 1;
    m.x = x;
    for (const auto& r : *load) {
      if (m.load.size() >= max_moe_layers) break;
      auto& cells = m.load.emplace_back();
      if (!r.is_array()) continue;  // a layer without numbers: an empty row
      for (const auto& v : r) {
        if (cells.size() >= max_moe_experts) break;
        auto n = number_of(v);
        cells.push_back(n ? static_cast<float>(*n) : nan_f);
      }
    }
    auto ids = row.find("moe_layers");
    bool named = ids != row.end() && ids->is_array() && ids->size() >= m.load.size();
    for (std::size_t i = 0; i < m.load.size(); ++i) {
      std::optional<double> id = named ? number_of((*ids)[i]) : std::nullopt;
      named = named && id.has_value();
      m.layers.push_back(id.value_or(static_cast<double>(i)));
    }
    if (!named)  // all ids or none: half a list would label rows wrongly
      for (std::size_t i = 0; i < m.layers.size(); ++i) m.layers[i] = static_cast<double>(i);
    moe_ = std::move(m);
  }
}

void run_series::clear() {
  x_key_.clear();
  x_.clear();
  keys_.clear();
  cols_.clear();
  ignored_ = 0;
  moe_.reset();
}

double run_series::value_at(std::string_view key, std::size_t i) const {
  for (std::size_t c = 0; c < keys_.size(); ++c)
    if (keys_[c] == key) return i < cols_[c].size() ? cols_[c][i] : std::nan("");
  return std::nan("");
}

double run_series::last(std::string_view key) const {
  for (std::size_t c = 0; c < keys_.size(); ++c) {
    if (keys_[c] != key) continue;
    for (std::size_t i = cols_[c].size(); i-- > 0;)
      if (!std::isnan(cols_[c][i])) return cols_[c][i];
  }
  return std::nan("");
}

void run_series::window(std::size_t begin, std::size_t end, int buckets, std::string& out) const {
  end = std::min(end, x_.size());
  const std::size_t b = static_cast<std::size_t>(std::max(buckets, 1));
  out += '{';
  bool first_key = true;
  for (std::size_t c = 0; c < keys_.size(); ++c) {
    const std::vector<float>& col = cols_[c];
    // Rows of this key in the window, reduced as downsample_minmax does: per bucket of rows its
    // lowest and highest point in x order, and always the first and last point.
    picked_.clear();
    std::size_t count = 0;
    for (std::size_t i = begin; i < end; ++i) count += !std::isnan(col[i]);
    if (count == 0) continue;
    if (count <= 2 * b + 2) {
      for (std::size_t i = begin; i < end; ++i)
        if (!std::isnan(col[i])) picked_.push_back(i);
    } else {
      const std::size_t n = end - begin;
      auto keep = [&](std::size_t i) {
        if (picked_.empty() || i > picked_.back()) picked_.push_back(i);
      };
      std::size_t first = begin, last = end - 1;
      while (std::isnan(col[first])) ++first;
      while (std::isnan(col[last])) --last;
      keep(first);
      for (std::size_t k = 0; k < b; ++k) {
        const std::size_t lo = begin + k * n / b, hi = begin + (k + 1) * n / b;
        std::size_t mn = end, mx = end;
        for (std::size_t i = lo; i < hi; ++i) {
          const float v = col[i];
          if (std::isnan(v)) continue;
          if (mn == end || v < col[mn]) mn = i;
          if (mx == end || v > col[mx]) mx = i;
        }
        if (mn == end) continue;  // no point of this key in the bucket
        keep(std::min(mn, mx));
        keep(std::max(mn, mx));
      }
      keep(last);
    }
    if (!first_key) out += ',';
    first_key = false;
    out += nlohmann::json(keys_[c]).dump();
    out += ":{\"x\":[";
    for (std::size_t j = 0; j < picked_.size(); ++j) {
      if (j) out += ',';
      put_number(out, x_[picked_[j]]);
    }
    out += "],\"y\":[";
    for (std::size_t j = 0; j < picked_.size(); ++j) {
      if (j) out += ',';
      put_number(out, col[picked_[j]]);
    }
    out += "]}";
  }
  out += '}';
}

void run_series::moe_json(std::string& out) const {
  if (!moe_) {
    out += "null";
    return;
  }
  out += "{\"x\":";
  put_number(out, moe_->x);
  out += ",\"layers\":[";
  for (std::size_t i = 0; i < moe_->layers.size(); ++i) {
    if (i) out += ',';
    put_number(out, moe_->layers[i]);
  }
  out += "],\"load\":[";
  for (std::size_t i = 0; i < moe_->load.size(); ++i) {
    if (i) out += ',';
    out += '[';
    for (std::size_t j = 0; j < moe_->load[i].size(); ++j) {
      if (j) out += ',';
      put_number(out, moe_->load[i][j]);
    }
    out += ']';
  }
  out += "]}";
}

std::size_t run_series::bytes() const {
  std::size_t n = x_.capacity() * sizeof(double);
  for (const auto& c : cols_) n += c.capacity() * sizeof(float);
  return n;
}

}  // namespace zf::monitor
