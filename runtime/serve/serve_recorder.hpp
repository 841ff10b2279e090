#pragma once
// Records a serving engine's figures over time into a run folder's metrics.jsonl (the console's
// server charts, issue 11): a thread that every `every_s` seconds takes a snapshot
// (completion_backend::snapshot) and appends one JSON object per line, flushed per line,
//   {"t": 1.0, "unix": 1796520000.1, "queue_depth": 0, "running": 2, ..., "weights_version": 0}
// t: seconds since the recorder started (steady clock), unix: wall time; the rest is the window
// since the previous line (serve_sample.hpp: window_of, json_members; figures the window cannot
// give are left out, never NaN). stop() writes one last line for the window up to it.
// Monitoring never throws into the server: a snapshot or a write that fails is reported once on
// stderr and counted, and the recorder goes on; only opening the file (at construction) throws.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "runtime/serve/serve_sample.hpp"

namespace zf::serve {

class serve_recorder {
 public:
  // nullopt: no figures now (that window is skipped).
  using source = std::function<std::optional<engine_snapshot>()>;

  // Creates file's folder, opens file for appending and takes the first snapshot (the first
  // window's start). every_s > 0. Throws zf::error naming the file or the bad interval.
  serve_recorder(std::filesystem::path file, double every_s, source src);
  ~serve_recorder();  // stop()
  serve_recorder(const serve_recorder&) = delete;
  serve_recorder& operator=(const serve_recorder&) = delete;

  // Writes the last line and ends the thread; later calls do nothing. Any thread but the
  // recorder's.
  void stop();
  int lines() const { return lines_.load(); }        // lines written so far
  int failures() const { return failures_.load(); }  // snapshots or writes that failed

  // One line's text, without the newline: {"t":t,"unix":unix_s,<json_members(f)>}.
  static std::string line(double t, double unix_s, const window_figures& f);

 private:
  void run();
  void record();  // one window: snapshot, line, flush
  void failed(const std::string& what);

  std::filesystem::path file_;
  double every_s_;
  source src_;
  std::FILE* out_ = nullptr;
  std::chrono::steady_clock::time_point start_, prev_at_;
  std::optional<engine_snapshot> prev_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::atomic<int> lines_{0}, failures_{0};
  std::thread thread_;
};

}  // namespace zf::serve
