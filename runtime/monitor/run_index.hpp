#pragma once
// Every run under a runs folder, as the console shows it (issue 11): each subfolder holding a
// run.json or a metrics.jsonl is a run, named by its folder. refresh() (the console's one
// reading thread) lists the folder, follows each run's files (jsonl_tail) and folds new lines
// in; any other thread reads through find() / runs() under the run's shared lock. Nothing here
// writes into a run folder; a URL's run name is looked up among the folders found, never joined
// onto a path, so no name reaches outside the runs folder.
//
//   metrics.jsonl  -> series (run_series: columns, downsampled windows); bad lines counted
//   spans.jsonl, spans.<anything>.jsonl -> the actors' busy spans, in unix seconds (each file's
//                     {"start_unix"} line rebases the lines after it), the last max_spans kept
//   run.json       -> status (run_status.hpp), reread when its modification time changes
// A rewritten metrics file (shorter than what was read) starts the series over and bumps the
// run's generation, so a stream's cursor (generation, rows) knows it must resend everything.
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "runtime/monitor/jsonl_tail.hpp"
#include "runtime/monitor/run_series.hpp"
#include "runtime/monitor/run_status.hpp"

namespace zf::monitor {

struct span_rec {
  uint32_t actor = 0, what = 0;  // indices into run_data::actors / whats
  double t0 = 0, t1 = 0;         // unix seconds
};

// One run's figures for the run list: what /api/runs shows.
struct run_summary {
  std::string name, kind, state = "unknown", message;
  double start_unix = 0, end_unix = 0;  // 0: unknown / not ended
  std::optional<double> last_step, eta_s;
  long total_steps = 0;
  std::size_t rows = 0, skipped = 0;
  double updated_unix = 0;  // the metrics file's modification time, 0: none
  bool loading = false;     // lines remain to be read (a long file's first reading)
};

class run_data {
 public:
  explicit run_data(std::string name, std::filesystem::path dir);

  mutable std::shared_mutex mu;  // readers share; refresh() holds it only to fold lines in
  // Guarded by mu:
  const std::string& name() const { return name_; }
  const std::optional<run_status>& status() const { return status_; }
  const run_series& series() const { return series_; }
  uint64_t generation() const { return generation_; }
  std::size_t skipped() const { return skipped_; }
  const std::vector<std::string>& actors() const { return actors_; }
  const std::vector<std::string>& whats() const { return whats_; }
  const std::deque<span_rec>& spans() const { return spans_; }
  uint64_t spans_end() const { return spans_end_; }  // spans ever kept; spans_.back() is -1
  run_summary summary(double now_unix) const;

 private:
  friend class run_index;
  struct span_file {
    std::filesystem::path path;
    jsonl_tail tail;
    double start_unix = 0;  // of the lines being read; 0: no start line yet
  };
  // Reads what is new (without mu), folds it in (with mu). True: a read hit its size limit, so
  // more is waiting.
  bool poll(std::size_t max_spans);
  void fold_spans(span_file& f, const tail_batch& b, std::size_t max_spans);
  uint32_t intern(std::vector<std::string>& names, const std::string& s);

  std::string name_;
  std::filesystem::path dir_;
  jsonl_tail metrics_;
  std::vector<std::unique_ptr<span_file>> span_files_;
  std::filesystem::file_time_type status_mtime_{};
  double metrics_mtime_ = 0;
  bool loading_ = true;

  std::optional<run_status> status_;
  run_series series_;
  uint64_t generation_ = 0;
  std::size_t skipped_ = 0;
  std::vector<std::string> actors_, whats_;
  std::deque<span_rec> spans_;
  uint64_t spans_end_ = 0;
};

class run_index {
 public:
  struct options {
    std::size_t max_spans = 20000;  // per run, the newest kept
  };
  explicit run_index(std::filesystem::path runs_dir, options o);
  explicit run_index(std::filesystem::path runs_dir) : run_index(std::move(runs_dir), options{}) {}

  // Lists the folder and reads every run's new lines. Returns true when some file has more
  // waiting than one read takes (call again without pausing). One thread at a time.
  bool refresh();
  // The run named so, or null (unknown, or its folder went away). The pointer stays valid after.
  std::shared_ptr<const run_data> find(const std::string& name) const;
  // Every run, newest first (by start time, then name).
  std::vector<std::shared_ptr<const run_data>> runs() const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  options o_;
  mutable std::mutex mu_;  // guards runs_ (the map, not the runs)
  std::map<std::string, std::shared_ptr<run_data>, std::less<>> runs_;
};

}  // namespace zf::monitor
