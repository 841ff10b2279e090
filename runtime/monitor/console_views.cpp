#include "runtime/monitor/console_views.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

namespace zf::monitor {

namespace {

using nlohmann::json;

// As JSON text; bytes that are not UTF-8 (a run folder's name is any bytes the file system
// allows) become U+FFFD instead of an exception.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json or_null(double v) {
  return v > 0 ? json(v) : json(nullptr);
}

json summary_json(const run_summary& s) {
  return {{"name", s.name},
          {"kind", s.kind},
          {"state", s.state},
          {"start_unix", or_null(s.start_unix)},
          {"end_unix", or_null(s.end_unix)},
          {"last_step", s.last_step ? json(*s.last_step) : json(nullptr)},
          {"total_steps", s.total_steps},
          {"eta_s", s.eta_s ? json(*s.eta_s) : json(nullptr)},
          {"rows", s.rows},
          {"skipped", s.skipped},
          {"updated_unix", or_null(s.updated_unix)},
          {"loading", s.loading},
          {"message", s.message}};
}

// A Prometheus label value: backslash, quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string cursor_text(uint64_t gen, std::size_t rows) {
  return fmt::format("{}.{}", gen, rows);
}

// "G.N" -> (G, N); nullopt for anything else.
std::optional<std::pair<uint64_t, std::size_t>> parse_cursor(std::string_view s) {
  const auto dot = s.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  uint64_t g = 0;
  std::size_t n = 0;
  auto a = std::from_chars(s.data(), s.data() + dot, g);
  auto b = std::from_chars(s.data() + dot + 1, s.data() + s.size(), n);
  if (a.ec != std::errc() || a.ptr != s.data() + dot || b.ec != std::errc() ||
      b.ptr != s.data() + s.size() || dot == 0)
    return std::nullopt;
  return std::pair{g, n};
}

}  // namespace

std::string runs_json(const run_index& idx, double now_unix) {
  json runs = json::array();
  for (const auto& r : idx.runs()) {
    std::shared_lock lock(r->mu);
    runs.push_back(summary_json(r->summary(now_unix)));
  }
  return dump(json{{"now_unix", now_unix}, {"runs", std::move(runs)}});
}

std::optional<std::string> run_json(const run_index& idx, const std::string& name,
                                    double now_unix) {
  auto r = idx.find(name);
  if (!r) return std::nullopt;
  std::shared_lock lock(r->mu);
  json j = summary_json(r->summary(now_unix));
  j["config"] = r->status() ? r->status()->config : "";
  j["x"] = r->series().x_key().empty() ? "step" : r->series().x_key();
  j["keys"] = r->series().keys();
  j["actors"] = r->actors();
  return dump(j);
}

std::string prometheus_text(const run_index& idx) {
  std::string o;
  o += "# HELP zeroflow_run_info A run under the console's runs folder.\n"
       "# TYPE zeroflow_run_info gauge\n";
  std::string rows, skipped, steps, values;
  for (const auto& r : idx.runs()) {
    std::shared_lock lock(r->mu);
    const run_summary s = r->summary(0);
    const std::string run = label(s.name);
    o += fmt::format("zeroflow_run_info{{run=\"{}\",kind=\"{}\",state=\"{}\"}} 1\n", run,
                     label(s.kind), s.state);
    rows += fmt::format("zeroflow_run_rows{{run=\"{}\"}} {}\n", run, s.rows);
    skipped += fmt::format("zeroflow_run_skipped_lines{{run=\"{}\"}} {}\n", run, s.skipped);
    if (s.last_step)
      steps += fmt::format("zeroflow_run_step{{run=\"{}\"}} {}\n", run, *s.last_step);
    for (const auto& k : r->series().keys()) {
      const double v = r->series().last(k);
      if (std::isfinite(v))
        values += fmt::format("zeroflow_run_value{{run=\"{}\",key=\"{}\"}} {}\n", run, label(k),
                              static_cast<float>(v));  // columns are floats: their shortest form
    }
  }
  o += "# HELP zeroflow_run_rows Metrics lines read.\n# TYPE zeroflow_run_rows gauge\n" + rows;
  o += "# HELP zeroflow_run_skipped_lines Metrics and span lines skipped as malformed.\n"
       "# TYPE zeroflow_run_skipped_lines gauge\n" +
       skipped;
  o += "# HELP zeroflow_run_step The last step recorded.\n# TYPE zeroflow_run_step gauge\n" + steps;
  o += "# HELP zeroflow_run_value The last value of each metric.\n"
       "# TYPE zeroflow_run_value gauge\n" +
       values;
  return o;
}

event_stream::event_stream(std::shared_ptr<const run_index> idx, std::string name, int width,
                           std::optional<std::string> last_event_id)
    : idx_(std::move(idx)),
      name_(std::move(name)),
      width_(std::clamp(width, 16, 8192)),
      resume_(std::move(last_event_id)) {}

bool event_stream::found() const {
  return idx_->find(name_) != nullptr;
}

void event_stream::snapshot(const run_data& r, double now, std::string& out) {
  gen_ = r.generation();
  rows_ = r.series().rows();
  const std::string cur = cursor_text(gen_, rows_);
  const run_summary s = r.summary(now);
  status_key_ = s.state + '\n' + s.message + '\n' + std::to_string(s.end_unix);
  out += "event: snapshot\nid: " + cur + "\ndata: {\"cursor\":\"" + cur + "\",\"x\":";
  out += dump(json(r.series().x_key().empty() ? "step" : r.series().x_key()));
  out += ",\"run\":" + dump(summary_json(s)) + ",\"series\":";
  r.series().window(0, rows_, width_, out);
  moe_sent_.reset();
  moe(r, out);
  out += "}\n\n";
}

void event_stream::append(const run_data& r, double now, std::string& out) {
  const std::size_t rows = r.series().rows();
  const run_summary s = r.summary(now);
  std::string key = s.state + '\n' + s.message + '\n' + std::to_string(s.end_unix);
  if (rows == rows_ && key == status_key_) return;
  const std::string cur = cursor_text(gen_, rows);
  out += "event: append\nid: " + cur + "\ndata: {\"cursor\":\"" + cur + "\",\"run\":";
  out += dump(summary_json(s)) + ",\"series\":";
  r.series().window(rows_, rows, width_, out);
  moe(r, out);
  out += "}\n\n";
  rows_ = rows;
  status_key_ = std::move(key);
}

void event_stream::moe(const run_data& r, std::string& out) {
  const auto& m = r.series().moe();
  if (!m || moe_sent_ == m->row) return;
  out += ",\"moe\":";
  r.series().moe_json(out);
  moe_sent_ = m->row;
}

void event_stream::spans(const run_data& r, std::string& out) {
  const auto& sp = r.spans();
  const uint64_t end = r.spans_end(), first_kept = end - sp.size();
  uint64_t from = std::max(spans_sent_, first_kept);
  if (!started_ && !sp.empty()) {  // the first time: the last span_window_s, at most so many
    const double horizon = sp.back().t1 - span_window_s;
    std::size_t i = sp.size();
    while (i > 0 && sp.size() - i < initial_spans && sp[i - 1].t1 >= horizon) --i;
    from = first_kept + i;
  }
  spans_sent_ = end;
  if (from >= end) return;
  out += "event: spans\ndata: {\"spans\":[";
  for (uint64_t s = from; s < end; ++s) {
    const span_rec& x = sp[s - first_kept];
    if (s > from) out += ',';
    out += "{\"actor\":" + dump(json(r.actors()[x.actor])) +
           ",\"what\":" + dump(json(r.whats()[x.what]));
    fmt::format_to(std::back_inserter(out), ",\"t0\":{:.6f},\"t1\":{:.6f}}}", x.t0, x.t1);
  }
  out += "]}\n\n";
}

std::string event_stream::poll(double now) {
  std::string out;
  if (done_) return out;
  auto r = idx_->find(name_);
  if (!r) {
    done_ = true;
    return "event: gone\ndata: " + dump(json{{"name", name_}}) + "\n\n";
  }
  {
    std::shared_lock lock(r->mu);
    if (!started_) {
      auto c = resume_ ? parse_cursor(*resume_) : std::nullopt;
      if (c && c->first == r->generation() && c->second <= r->series().rows()) {
        gen_ = c->first;
        rows_ = c->second;
        status_key_.clear();  // say the run's state again
        append(*r, now, out);
      } else {
        snapshot(*r, now, out);
      }
    } else if (r->generation() != gen_) {
      snapshot(*r, now, out);
    } else {
      append(*r, now, out);
    }
    spans(*r, out);
    started_ = true;
  }
  if (out.empty() && now - last_sent_ >= ping_s) out = ": ping\n\n";
  if (!out.empty()) last_sent_ = now;
  return out;
}

}  // namespace zf::monitor
