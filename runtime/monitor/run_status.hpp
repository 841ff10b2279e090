#pragma once
// run.json: what a run folder says about the run itself, for the console's run list (issue 11).
// The process that owns the run rewrites it whole (a temporary file renamed over it, so a reader
// never sees half of it) when the run starts and when it ends:
//   {"kind": "train", "state": "running", "pid": 4242, "host": "node1",
//    "start_unix": 1796520000.1, "end_unix": null, "total_steps": 600,
//    "message": "", "config": "<the run's TOML>"}
// state: running, finished, failed (message says why), interrupted (stopped by a signal or
// --stop-after, resumable). A reader on the same host that finds "running" with no such process
// reports "lost": the process died without saying how (killed, out of memory).
// Nothing here throws into a run: a failed write is logged and counted.
#include <filesystem>
#include <optional>
#include <string>

#include "runtime/core/clock.hpp"

namespace zf::monitor {

using zf::unix_now;  // runtime/core/clock.hpp

enum class run_state { running, finished, failed, interrupted, lost };
const char* to_string(run_state s);

struct run_status {
  std::string kind;  // train, rl, serve
  run_state state = run_state::running;
  long pid = 0;
  std::string host;
  double start_unix = 0, end_unix = 0;  // end 0: not ended
  long total_steps = 0;                 // 0: unknown or not a stepped run (serve)
  std::string message;
  std::string config;  // the run's TOML text, as resolved
};

// Reads DIR/run.json. nullopt: no such file. A file that is not a run record gives a status
// whose state is failed and whose message says what was wrong (the console shows it, never
// throws). "running" from a dead process on this host comes back as lost.
std::optional<run_status> read_run_status(const std::filesystem::path& dir);

// Owns DIR/run.json for one run: writes it "running" now, the final state at finish(). A writer
// destroyed without finish() (an exception unwinding the run) writes failed, "ended without a
// result".
class run_status_writer {
 public:
  run_status_writer(std::filesystem::path dir, std::string kind, std::string config_toml,
                    long total_steps);
  ~run_status_writer();
  run_status_writer(const run_status_writer&) = delete;
  run_status_writer& operator=(const run_status_writer&) = delete;

  void finish(run_state s, std::string message = {});
  const run_status& status() const { return st_; }
  bool ok() const { return failures_ == 0; }  // every write so far succeeded

 private:
  void write();
  std::filesystem::path dir_;
  run_status st_;
  bool finished_ = false;
  int failures_ = 0;
};

}  // namespace zf::monitor
