#pragma once
// What the console's HTTP routes answer, as text, without sockets (issue 11; actors/console_http
// does the I/O): the run list, one run's detail, its live event stream, Prometheus text.
//
//   runs_json      {"now_unix": T, "runs": [RUN, ...]}  newest first
//     RUN = {"name", "kind", "state", "start_unix", "end_unix", "last_step", "total_steps",
//            "eta_s", "rows", "skipped", "updated_unix", "loading", "message"} (unknowns null)
//   run_json       RUN + {"config": TOML, "x": "step"|"t"|"row", "keys": [...], "actors": [...]}
//   event_stream   server-sent events for one run, each poll() the bytes to send:
//     event: snapshot  id: G.N  data: {"cursor": "G.N", "x", "run": RUN, "series": SERIES}
//     event: append    id: G.N  data: {"cursor": "G.N", "run": RUN, "series": SERIES}  new rows
//     event: spans     data: {"spans": [{"actor", "what", "t0", "t1"}, ...]}  (unix seconds)
//     event: gone      data: {"name": NAME}  the run's folder went away; the stream is done
//     ": ping" every ping_s of silence
//   SERIES = {"key": {"x": [...], "y": [...]}, ...}: every key, rows reduced to `width` min/max
//   buckets (run_series::window), so a chart receives O(width) points whatever the run's length.
//   A snapshot or append of a Mixture-of-Experts run also carries "moe": {"x", "layers", "load"}
//   (run_series::moe_json: the latest moe_load, for the routing heatmap) when it has not been
//   sent on this stream yet or changed since; a run without moe_load never carries the key.
//   The cursor G.N is the run's generation (bumped when its file is rewritten) and rows sent. A
//   reconnecting EventSource sends it back as Last-Event-ID: same generation and N <= rows gets
//   only the rows after N; anything else (another generation, garbage) a fresh snapshot.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/monitor/run_index.hpp"

namespace zf::monitor {

std::string runs_json(const run_index& idx, double now_unix);
// nullopt: no such run.
std::optional<std::string> run_json(const run_index& idx, const std::string& name, double now_unix);
// Prometheus text of every run's last values:
//   zeroflow_run_info{run,kind,state} 1   zeroflow_run_rows{run}   zeroflow_run_skipped_lines{run}
//   zeroflow_run_step{run}   zeroflow_run_value{run,key} (each key's last value)
std::string prometheus_text(const run_index& idx);

class event_stream {
 public:
  static constexpr double ping_s = 15;
  static constexpr std::size_t initial_spans = 5000;  // at most, from the last 60 s
  static constexpr double span_window_s = 60;

  // width: the chart's width in pixels (clamped to [16, 8192]). last_event_id: the
  // Last-Event-ID header of a reconnect, if any.
  event_stream(std::shared_ptr<const run_index> idx, std::string name, int width,
               std::optional<std::string> last_event_id);
  // The SSE bytes to send now (empty: nothing new). After a "gone" event, done() is true.
  std::string poll(double now_unix);
  bool done() const { return done_; }
  bool found() const;  // the run exists (else the route answers 404 instead)

 private:
  void snapshot(const run_data& r, double now, std::string& out);
  void append(const run_data& r, double now, std::string& out);
  void spans(const run_data& r, std::string& out);
  void moe(const run_data& r, std::string& out);  // ,"moe":{...} when there is a new one
  std::shared_ptr<const run_index> idx_;
  std::string name_;
  int width_;
  std::optional<std::string> resume_;
  bool started_ = false, done_ = false;
  uint64_t gen_ = 0;
  std::size_t rows_ = 0;
  uint64_t spans_sent_ = 0;              // run_data::spans_end() at the last spans event
  std::string status_key_;               // what RUN said last time (state, message, end)
  std::optional<std::size_t> moe_sent_;  // the row of the moe_load sent last
  double last_sent_ = 0;
};

}  // namespace zf::monitor
