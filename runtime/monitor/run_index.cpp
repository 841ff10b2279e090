#include "runtime/monitor/run_index.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace zf::monitor {

namespace fs = std::filesystem;

namespace {

// A file's modification time in unix seconds; 0 when it is not there.
double mtime_unix(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return static_cast<double>(st.st_mtim.tv_sec) + 1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
}

bool is_span_file(const std::string& f) {
  return f == "spans.jsonl" || (f.starts_with("spans.") && f.ends_with(".jsonl"));
}

// Seconds per step over the last rows that carry elapsed_s (the run's own clock, since it or its
// resume started); nullopt when there are not two such rows after the last resume.
std::optional<double> seconds_per_step(const run_series& s) {
  const std::size_t n = s.rows(), from = n > 200 ? n - 200 : 0;
  std::optional<std::size_t> last, first;
  for (std::size_t i = n; i-- > from;) {
    if (std::isnan(s.value_at("elapsed_s", i))) continue;
    if (!last) {
      last = i;
    } else if (s.value_at("elapsed_s", i) > s.value_at("elapsed_s", *last)) {
      break;  // a resume restarted the clock: stop at the segment's start
    } else {
      first = i;
    }
  }
  if (!first || s.x_at(*last) <= s.x_at(*first)) return std::nullopt;
  return (s.value_at("elapsed_s", *last) - s.value_at("elapsed_s", *first)) /
         (s.x_at(*last) - s.x_at(*first));
}

}  // namespace

run_data::run_data(std::string name, fs::path dir)
    : name_(std::move(name)), dir_(std::move(dir)), metrics_(dir_ / "metrics.jsonl") {}

run_summary run_data::summary(double now_unix) const {
  run_summary r;
  r.name = name_;
  r.rows = series_.rows();
  r.skipped = skipped_;
  r.updated_unix = metrics_mtime_;
  r.loading = loading_;
  if (status_) {
    r.kind = status_->kind;
    r.state = to_string(status_->state);
    r.message = status_->message;
    r.start_unix = status_->start_unix;
    r.end_unix = status_->end_unix;
    r.total_steps = status_->total_steps;
  }
  if (series_.x_key() == "step" && r.rows > 0) r.last_step = series_.last_x();
  if (r.state == "running" && r.total_steps > 0 && r.last_step && *r.last_step > 0) {
    const double left = std::max(0.0, static_cast<double>(r.total_steps) - *r.last_step);
    if (auto sps = seconds_per_step(series_))
      r.eta_s = left * *sps;
    else if (r.start_unix > 0)
      r.eta_s = left * (now_unix - r.start_unix) / *r.last_step;
  }
  return r;
}

uint32_t run_data::intern(std::vector<std::string>& names, const std::string& s) {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == s) return static_cast<uint32_t>(i);
  names.push_back(s);
  return static_cast<uint32_t>(names.size() - 1);
}

void run_data::fold_spans(span_file& f, const tail_batch& b, std::size_t max_spans) {
  for (const auto& row : b.rows) {
    if (auto it = row.find("start_unix"); it != row.end() && it->is_number()) {
      f.start_unix = it->get<double>();
      continue;
    }
    auto a = row.find("actor"), w = row.find("what"), t0 = row.find("t0"), t1 = row.find("t1");
    if (a == row.end() || t0 == row.end() || t1 == row.end() || !a->is_string() ||
        !t0->is_number() || !t1->is_number() || f.start_unix == 0) {
      ++skipped_;
      continue;
    }
    span_rec s;
    s.actor = intern(actors_, a->get<std::string>());
    s.what = intern(whats_, w != row.end() && w->is_string() ? w->get<std::string>() : "busy");
    s.t0 = f.start_unix + t0->get<double>();
    s.t1 = f.start_unix + t1->get<double>();
    spans_.push_back(s);
    ++spans_end_;
    if (spans_.size() > max_spans) spans_.pop_front();
  }
  skipped_ += b.skipped;
}

bool run_data::poll(std::size_t max_spans) {
  bool more = false;
  // run.json: reread when it changed (a whole-file rename, so one read sees all of it)
  std::error_code ec;
  const auto mt = fs::last_write_time(dir_ / "run.json", ec);
  std::optional<std::optional<run_status>> status;
  if (!ec && mt != status_mtime_) {
    status_mtime_ = mt;
    status = read_run_status(dir_);
  } else if (status_ && status_->state == run_state::running) {
    status = read_run_status(dir_);  // the process may have died since
  }
  const double metrics_mtime = mtime_unix(dir_ / "metrics.jsonl");

  tail_batch b = metrics_.poll();  // parsing happens here, outside the lock
  more = b.more;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string f = entry.path().filename().string();
    if (!is_span_file(f)) continue;
    bool known = false;
    for (const auto& sf : span_files_) known |= sf->path == entry.path();
    if (!known)
      span_files_.push_back(
          std::make_unique<span_file>(span_file{entry.path(), jsonl_tail(entry.path())}));
  }
  std::vector<tail_batch> sb;
  for (auto& sf : span_files_) {
    sb.push_back(sf->tail.poll());
    more |= sb.back().more;
  }

  std::unique_lock lock(mu);
  if (status) status_ = std::move(*status);
  metrics_mtime_ = metrics_mtime;
  if (b.reset) {
    series_.clear();
    ++generation_;
  }
  for (const auto& row : b.rows) series_.add(row);
  skipped_ += b.skipped;
  for (std::size_t i = 0; i < sb.size(); ++i) fold_spans(*span_files_[i], sb[i], max_spans);
  loading_ = more;
  return more;
}

run_index::run_index(fs::path runs_dir, options o) : dir_(std::move(runs_dir)), o_(o) {}

bool run_index::refresh() {
  // The folders that are runs now.
  std::map<std::string, fs::path, std::less<>> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || !it->is_directory(ec)) continue;
    if (fs::exists(it->path() / "run.json", ec) || fs::exists(it->path() / "metrics.jsonl", ec))
      found.emplace(name, it->path());
  }
  std::vector<std::shared_ptr<run_data>> live;
  {
    std::lock_guard lock(mu_);
    std::erase_if(runs_, [&](const auto& kv) { return !found.contains(kv.first); });
    for (const auto& [name, path] : found)
      if (!runs_.contains(name)) runs_.emplace(name, std::make_shared<run_data>(name, path));
    for (const auto& kv : runs_) live.push_back(kv.second);
  }
  bool more = false;
  for (const auto& r : live) more |= r->poll(o_.max_spans);
  return more;
}

std::shared_ptr<const run_data> run_index::find(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = runs_.find(name);
  return it == runs_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const run_data>> run_index::runs() const {
  std::vector<std::shared_ptr<const run_data>> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& kv : runs_) out.push_back(kv.second);
  }
  auto start = [](const run_data& r) {
    std::shared_lock lock(r.mu);
    return r.status() ? r.status()->start_unix : 0.0;
  };
  std::vector<std::pair<double, std::shared_ptr<const run_data>>> keyed;
  for (auto& r : out) keyed.emplace_back(start(*r), r);
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second->name() > b.second->name();
  });
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = keyed[i].second;
  return out;
}

}  // namespace zf::monitor
