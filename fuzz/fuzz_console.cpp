// libFuzzer target: what a run folder may hold (run.json, metrics.jsonl, spans.jsonl, as a
// killed, buggy or hostile writer leaves them) and a reconnecting client's Last-Event-ID, through
// the console's reading side (runtime/monitor: run_index, run_series, console_views). Input: the
// four parts separated by NUL bytes. The console must never crash or throw on them, and every
// answer it builds must stay what its clients parse: the run list and detail JSON, each SSE
// event's data line JSON, whatever the numbers (NaN, 1e999) or names (quotes, control bytes).
// The metrics part is appended a second time (the file grows) and then rewritten shorter (a
// resumed run), so the stream's append and reset paths run too.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "runtime/monitor/console_views.hpp"
#include "runtime/monitor/run_index.hpp"

namespace {

std::vector<std::string_view> split(std::string_view s, std::size_t parts) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const auto z = s.find('\0');
    if (z == std::string_view::npos) break;
    out.push_back(s.substr(0, z));
    s.remove_prefix(z + 1);
  }
  out.push_back(s);
  out.resize(parts);
  return out;
}

void check_json(const std::string& text, const char* what) {
  ZF_FUZZ_CHECK(nlohmann::json::accept(text), "%s is not JSON: %s", what, text.c_str());
}

// Every "data: " line of an SSE text is JSON.
void check_events(const std::string& sse) {
  std::size_t start = 0;
  for (std::size_t nl; (nl = sse.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string_view line(sse.data() + start, nl - start);
    if (line.starts_with("data: ")) check_json(std::string(line.substr(6)), "an SSE data line");
  }
}

void views(const std::shared_ptr<zf::monitor::run_index>& idx, zf::monitor::event_stream& st,
           double now) {
  check_json(zf::monitor::runs_json(*idx, now), "the run list");
  if (auto one = zf::monitor::run_json(*idx, "r", now)) check_json(*one, "the run detail");
  check_events(st.poll(now));
  zf::fuzz::keep(zf::monitor::prometheus_text(*idx).size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = split({reinterpret_cast<const char*>(data), size}, 4);
  const auto& root = zf::fuzz::scratch_dir("console");
  const auto runs = root / "runs", dir = runs / "r";
  std::error_code ec;
  std::filesystem::remove_all(runs, ec);
  std::filesystem::create_directories(dir);
  zf::fuzz::write_file(dir / "run.json", parts[0]);
  zf::fuzz::write_file(dir / "metrics.jsonl", parts[1]);
  zf::fuzz::write_file(dir / "spans.jsonl", parts[2]);
  auto idx = std::make_shared<zf::monitor::run_index>(runs);
  idx->refresh();
  const std::string id(parts[3]);
  zf::monitor::event_stream st(idx, "r", 64, id.empty() ? std::nullopt : std::optional(id));
  views(idx, st, 1e9);
  {
    std::ofstream out(dir / "metrics.jsonl", std::ios::binary | std::ios::app);
    out << parts[1];
  }
  idx->refresh();
  views(idx, st, 1e9 + 1);
  zf::fuzz::write_file(dir / "metrics.jsonl", parts[1].substr(0, parts[1].size() / 2));
  idx->refresh();
  views(idx, st, 1e9 + 2);
  return 0;
}
