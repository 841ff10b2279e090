#include "runtime/serve/serve_recorder.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <thread>

#include "runtime/core/clock.hpp"
#include "runtime/core/error.hpp"

namespace zf::serve {
serve_recorder::serve_recorder(std::filesystem::path file, double every_s, source src)
    : file_(std::move(file)), every_s_(every_s), src_(std::move(src)) {
  if (!(every_s_ > 0) || !std::isfinite(every_s_))
    fail("{}: the recording interval must be a positive number of seconds, got {}", file_.string(),
         every_s_);
  if (!src_) fail("{}: no source of figures to record", file_.string());
  std::error_code ec;
  if (file_.has_parent_path()) std::filesystem::create_directories(file_.parent_path(), ec);
  if (ec) fail("cannot create the run folder {}: {}", file_.parent_path().string(), ec.message());
  out_ = std::fopen(file_.c_str(), "ab");
  if (!out_) fail("cannot open {} for appending: {}", file_.string(), std::strerror(errno));
  start_ = prev_at_ = std::chrono::steady_clock::now();
  try {
    prev_ = src_();
  } catch (const std::exception& e) {
    failed(fmt::format("a snapshot failed: {}", e.what()));
  }
  thread_ = std::thread([this] { run(); });
}

serve_recorder::~serve_recorder() {
  stop();
  if (out_) std::fclose(out_);
}

void serve_recorder::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string serve_recorder::line(double t, double unix_s, const window_figures& f) {
  return fmt::format("{{\"t\":{:.3f},\"unix\":{:.3f},{}}}", t, unix_s, json_members(f));
}

void serve_recorder::run() {
  // Deadlines every every_s from the start (no drift); one missed (a slow disk) is skipped.
  const auto every = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(every_s_));
  auto next = start_ + every;
  std::unique_lock lk(mu_);
  while (!stopping_) {
    if (cv_.wait_until(lk, next, [this] { return stopping_; })) break;
    lk.unlock();
    record();
    lk.lock();
    next += every;
    if (const auto now = std::chrono::steady_clock::now(); next <= now) next = now + every;
  }
  lk.unlock();
  record();  // the window up to stop()
}

void serve_recorder::record() {
  // A window is at least the line's resolution (1 ms) long, so "t" strictly increases even when
  // stop() lands right after a periodic line (CI once saw two lines at t=0.401).
  if (const auto min_end = prev_at_ + std::chrono::milliseconds(1);
      std::chrono::steady_clock::now() < min_end)
    std::this_thread::sleep_until(min_end);
  try {
    std::optional<engine_snapshot> cur = src_();
    const auto at = std::chrono::steady_clock::now();
    if (!cur) return;  // no figures now: the next window starts from the last ones
    if (prev_) {
      const double seconds = std::chrono::duration<double>(at - prev_at_).count();
      const double t = std::chrono::duration<double>(at - start_).count();
      const std::string text = line(t, unix_now(), window_of(*prev_, *cur, seconds)) + "\n";
      if (std::fwrite(text.data(), 1, text.size(), out_) != text.size() || std::fflush(out_) != 0)
        return failed(fmt::format("cannot write {}: {}", file_.string(), std::strerror(errno)));
      ++lines_;
    }
    prev_ = std::move(cur);
    prev_at_ = at;
  } catch (const std::exception& e) {
    failed(fmt::format("a snapshot failed: {}", e.what()));
  }
}

void serve_recorder::failed(const std::string& what) {
  if (failures_.fetch_add(1) == 0)  // once: a full disk would say it every second
    fmt::print(stderr, "zeroflow: serve recorder: {} (further failures are not reported)\n", what);
}

}  // namespace zf::serve
