#pragma once
// The busy spans of a run's actors, for the console's timeline (issue 11): spans.jsonl in the run
// folder, append-only JSON lines, so the console reads it like metrics.jsonl (jsonl_tail) whether
// the run is alive or not. The first line a log writes says when it started:
//   {"start_unix": 1796520000.123}
// then one line per span, seconds since that start (a steady clock):
//   {"actor": "policy", "what": "update", "t0": 12.5031, "t1": 12.5612}
// Idle is the gaps. Any thread may add; lines are buffered (one buffer, reused) and written whole
// when the buffer fills, when a span ends flush_interval after the last write (a live console
// sees a slow run), on flush() and at destruction, so a killed run loses at most its last
// buffer and never leaves half a line mid-file. Writing never throws into the actor that spans:
// a failed write is counted (failures()).
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace zf::monitor {

class span_log {
 public:
  using clock = std::chrono::steady_clock;
  // Appends to `file` (created); flush_bytes: buffered before a write.
  explicit span_log(const std::filesystem::path& file, std::size_t flush_bytes = 64 << 10);
  ~span_log();
  span_log(const span_log&) = delete;
  span_log& operator=(const span_log&) = delete;

  void add(std::string_view actor, std::string_view what, clock::time_point t0,
           clock::time_point t1);
  void flush();
  std::size_t spans() const;
  std::size_t failures() const;

 private:
  static constexpr std::chrono::seconds flush_interval{1};
  void write_locked();
  mutable std::mutex mu_;
  std::FILE* f_ = nullptr;
  clock::time_point start_, last_write_;
  std::string buf_;
  std::size_t flush_bytes_, spans_ = 0, failures_ = 0;
};

// Many short busy spans of one actor (a serving engine's steps, a few ms each, back to back under
// load) as fewer lines: a span that starts within `gap` of the current one's end extends it;
// the current one is written when a later span does not, when it has grown to `max_len` (so a
// busy actor still shows up live), and at flush() or destruction. Any thread.
class span_coalescer {
 public:
  // Shares the log: a call still in flight on another thread when its owner lets go (an engine
  // step finishing during shutdown) writes to a log that is still there.
  span_coalescer(std::shared_ptr<span_log> log, std::string actor, std::string what,
                 std::chrono::microseconds gap = std::chrono::milliseconds(2),
                 std::chrono::microseconds max_len = std::chrono::milliseconds(500))
      : log_(std::move(log)),
        actor_(std::move(actor)),
        what_(std::move(what)),
        gap_(gap),
        max_len_(max_len) {}
  ~span_coalescer() { flush(); }
  void add(span_log::clock::time_point t0, span_log::clock::time_point t1);
  void flush();
  // Writes the current span if it ended more than `gap` before now (the actor went idle), so an
  // idle actor's last busy period shows without waiting for its next one. Call it periodically.
  void flush_idle(span_log::clock::time_point now);

 private:
  std::shared_ptr<span_log> log_;
  std::string actor_, what_;
  std::chrono::microseconds gap_, max_len_;
  std::mutex mu_;
  bool open_ = false;
  span_log::clock::time_point t0_, t1_;
};

}  // namespace zf::monitor
