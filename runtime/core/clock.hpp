#pragma once
// Wall-clock figures for reports (time splits, idle fractions): never for logic.
#include <chrono>

namespace zf {

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Seconds since 1970 (run.json, event files, metrics lines): what a reader on another machine
// or later can place in time.
inline double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace zf
