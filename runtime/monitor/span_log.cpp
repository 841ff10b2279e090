#include "runtime/monitor/span_log.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "runtime/core/clock.hpp"

namespace zf::monitor {

span_log::span_log(const std::filesystem::path& file, std::size_t flush_bytes)
    : start_(clock::now()), last_write_(start_), flush_bytes_(flush_bytes) {
  f_ = std::fopen(file.c_str(), "ab");
  buf_.reserve(flush_bytes_ + 256);
  buf_ += fmt::format("{{\"start_unix\": {:.3f}}}\n", unix_now());
  if (!f_) ++failures_;
}

span_log::~span_log() {
  flush();
  if (f_) std::fclose(f_);
}

void span_log::add(std::string_view actor, std::string_view what, clock::time_point t0,
                   clock::time_point t1) {
  const double a = std::chrono::duration<double>(t0 - start_).count();
  const double b = std::chrono::duration<double>(t1 - start_).count();
  std::lock_guard lk(mu_);
  // Names are ours (role and phase names), but escape them anyway: a line is always valid JSON.
  buf_ += "{\"actor\": ";
  buf_ += nlohmann::json(actor).dump();
  buf_ += ", \"what\": ";
  buf_ += nlohmann::json(what).dump();
  fmt::format_to(std::back_inserter(buf_), ", \"t0\": {:.6f}, \"t1\": {:.6f}}}\n", a, b);
  ++spans_;
  // Whole buffers, or at least every flush_interval so a live console sees a slow run's spans.
  if (buf_.size() >= flush_bytes_ || t1 - last_write_ >= flush_interval) write_locked();
}

void span_log::write_locked() {
  if (buf_.empty()) return;
  if (!f_ || std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size() || std::fflush(f_) != 0)
    ++failures_;
  buf_.clear();  // keeps its capacity
  last_write_ = clock::now();
}

void span_log::flush() {
  std::lock_guard lk(mu_);
  write_locked();
}

std::size_t span_log::spans() const {
  std::lock_guard lk(mu_);
  return spans_;
}

std::size_t span_log::failures() const {
  std::lock_guard lk(mu_);
  return failures_;
}

void span_coalescer::add(span_log::clock::time_point t0, span_log::clock::time_point t1) {
  std::lock_guard lk(mu_);
  if (open_ && t0 <= t1_ + gap_ && t1_ - t0_ < max_len_) {
    t1_ = std::max(t1_, t1);
    return;
  }
  if (open_) log_->add(actor_, what_, t0_, t1_);
  open_ = true;
  t0_ = t0;
  t1_ = t1;
}

void span_coalescer::flush_idle(span_log::clock::time_point now) {
  std::lock_guard lk(mu_);
  if (!open_ || now <= t1_ + gap_) return;
  log_->add(actor_, what_, t0_, t1_);
  open_ = false;
}

void span_coalescer::flush() {
  std::lock_guard lk(mu_);
  if (open_) log_->add(actor_, what_, t0_, t1_);
  open_ = false;
}

}  // namespace zf::monitor
