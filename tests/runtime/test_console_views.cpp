// The console's data side (runtime/monitor: run_series, run_index, console_views) without
// sockets: a runs folder read as it grows, series reduced to the chart's width with spikes kept,
// the event stream's snapshot / append / resume / gone, Prometheus text, and names from URLs
// that never reach outside the folder.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/monitor/console_views.hpp"
#include "runtime/monitor/run_index.hpp"
#include "runtime/monitor/run_series.hpp"
#include "test_util.hpp"

using namespace zf::monitor;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

void append(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::app | std::ios::binary) << text;
}

std::string steps(int from, int to) {  // metrics lines for steps [from, to]
  std::string s;
  for (int i = from; i <= to; ++i)
    s += fmt::format("{{\"step\": {}, \"loss\": {}, \"lr\": 0.001, \"elapsed_s\": {}}}\n", i,
                     5 - i * 0.03, i * 0.5);
  return s;
}

json window_json(const run_series& s, std::size_t a, std::size_t b, int buckets) {
  std::string out;
  s.window(a, b, buckets, out);
  return json::parse(out);
}

// The data lines of the SSE events in `bytes`, with their event names.
std::vector<std::pair<std::string, json>> events(const std::string& bytes) {
  std::vector<std::pair<std::string, json>> out;
  std::string name;
  std::size_t start = 0;
  for (std::size_t nl; (nl = bytes.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = bytes.substr(start, nl - start);
    if (line.starts_with("event: ")) name = line.substr(7);
    if (line.starts_with("data: ")) out.emplace_back(name, json::parse(line.substr(6)));
  }
  return out;
}

}  // namespace

TEST_CASE("run series: columns by key, sparse keys, nested keys, x from step or t") {
  run_series s;
  s.add(json::parse(R"({"step": 1, "loss": 4.5, "ok": true, "reward": {"mean": 0.25}})"));
  s.add(json::parse(R"({"step": 2, "loss": 4.0, "val_loss": 4.25, "note": "text"})"));
  CHECK(s.x_key() == "step");
  CHECK(s.rows() == 2);
  CHECK(s.keys() == std::vector<std::string>{"loss", "ok", "reward.mean", "val_loss"});
  const json w = window_json(s, 0, 2, 100);
  CHECK(w["loss"]["x"] == json::array({1, 2}));
  CHECK(w["loss"]["y"] == json::array({4.5, 4.0}));
  CHECK(w["val_loss"]["x"] == json::array({2}));  // only where the row has it
  CHECK(w["ok"]["y"] == json::array({1}));
  CHECK(w["reward.mean"]["y"] == json::array({0.25}));
  CHECK(std::isnan(s.last("missing")));
  CHECK(s.last("loss") == 4.0);

  run_series t;  // a server's lines: seconds
  t.add(json::parse(R"({"t": 0.5, "queue_depth": 3})"));
  CHECK(t.x_key() == "t");
  CHECK(t.last_x() == 0.5);
  // float columns print their shortest form, so 3.2 comes back as 3.2
  run_series f;
  f.add(json::parse(R"({"step": 1, "loss": 3.2})"));
  CHECK(window_json(f, 0, 1, 8)["loss"]["y"][0].get<double>() == 3.2);
}

TEST_CASE("run series: a long series is reduced to the width, its spike and ends kept") {
  run_series s;
  const int n = 100000;
  for (int i = 1; i <= n; ++i) {
    json row = {{"step", i}, {"loss", i == 77777 ? 50.0 : 2.0 + std::sin(i * 0.01)}};
    if (i % 1000 == 0) row["val_loss"] = 3.0;
    s.add(row);
  }
  const json w = window_json(s, 0, s.rows(), 400);
  const auto& ys = w["loss"]["y"];
  CHECK(ys.size() <= 2 * 400 + 2);
  CHECK(ys.size() >= 400);
  CHECK(w["loss"]["x"].front() == 1);
  CHECK(w["loss"]["x"].back() == n);
  double mx = 0;
  for (const auto& y : ys) mx = std::max(mx, y.get<double>());
  CHECK(mx == 50.0);                        // the spike survives
  CHECK(w["val_loss"]["x"].size() == 100);  // sparse: all of its 100 points fit
  // x stays increasing
  const auto& xs = w["loss"]["x"];
  for (std::size_t i = 1; i < xs.size(); ++i) CHECK(xs[i].get<double>() > xs[i - 1].get<double>());
  // A window of new rows only
  const json tail = window_json(s, n - 10, n, 400);
  CHECK(tail["loss"]["x"].size() == 10);
  CHECK(tail["loss"]["x"].front() == n - 9);
}

TEST_CASE("run index: runs found, lines followed, garbage counted, rewrites and deletions seen") {
  zf::testing::temp_dir d("run_index");
  fs::create_directories(d / "a");
  fs::create_directories(d / "b");
  fs::create_directories(d / "not_a_run");  // no run.json, no metrics.jsonl
  append(d / "a" / "metrics.jsonl", steps(1, 10));
  append(d / "b" / "metrics.jsonl", steps(1, 3));
  {
    std::ofstream(d / "a" / "run.json") << json{
        {"kind", "train"},
        {"state", "running"},
        {"pid", ::getpid()},
        {"host", ""},
        {"start_unix", 1000.0},
        {"total_steps", 100},
        {"config", "[train]\nsteps = 100\n"}}.dump();
  }
  run_index idx(d.path);
  idx.refresh();
  auto runs = idx.runs();
  REQUIRE(runs.size() == 2);
  CHECK(runs[0]->name() == "a");  // has a start time: newest first
  CHECK(idx.find("not_a_run") == nullptr);
  CHECK(idx.find("../a") == nullptr);  // a name is looked up, never joined onto a path
  CHECK(idx.find("a/../b") == nullptr);
  auto a = idx.find("a");
  REQUIRE(a);
  {
    const run_summary s = a->summary(2000);
    CHECK(s.kind == "train");
    CHECK(s.state == "running");
    CHECK(s.rows == 10);
    CHECK(*s.last_step == 10);
    REQUIRE(s.eta_s);
    CHECK(*s.eta_s == doctest::Approx(90 * 0.5));  // elapsed_s advances 0.5 s per step
  }
  append(d / "a" / "metrics.jsonl", "garbage\n{\"step\": 11, \"loss\": 1.5}\n{\"step\": 12, \"lo");
  idx.refresh();
  CHECK(a->summary(0).rows == 11);
  CHECK(a->summary(0).skipped == 1);
  // Rewritten shorter (a resumed run keeps its first lines): the generation moves on.
  const uint64_t g = a->generation();
  { std::ofstream(d / "a" / "metrics.jsonl", std::ios::trunc) << steps(1, 4); }
  idx.refresh();
  CHECK(a->generation() == g + 1);
  CHECK(a->series().rows() == 4);
  fs::remove_all(d / "b");
  idx.refresh();
  CHECK(idx.find("b") == nullptr);
  CHECK(idx.runs().size() == 1);
}

TEST_CASE("run index: spans of several files in unix seconds, the newest kept") {
  zf::testing::temp_dir d("run_spans");
  fs::create_directories(d / "r");
  append(d / "r" / "metrics.jsonl", steps(1, 1));
  append(d / "r" / "spans.jsonl",
         "{\"start_unix\": 1000}\n{\"actor\": \"rank0\", \"what\": \"fwd\", \"t0\": 1, \"t1\": 2}\n"
         "{\"actor\": 5}\n");
  append(d / "r" / "spans.p1.jsonl",
         "{\"start_unix\": 2000}\n{\"actor\": \"rank1\", \"what\": \"fwd\", \"t0\": 0.5, "
         "\"t1\": 0.75}\n");
  run_index idx(d.path, {.max_spans = 3});
  idx.refresh();
  auto r = idx.find("r");
  REQUIRE(r);
  REQUIRE(r->spans().size() == 2);
  CHECK(r->actors().size() == 2);
  double t0s = r->spans()[0].t0 + r->spans()[1].t0;
  CHECK(t0s == doctest::Approx(1001 + 2000.5));
  CHECK(r->skipped() == 1);  // {"actor": 5}
  std::string more;
  for (int i = 0; i < 5; ++i)
    more += fmt::format("{{\"actor\": \"rank0\", \"what\": \"fwd\", \"t0\": {}, \"t1\": {}}}\n",
                        10 + i, 10.5 + i);
  append(d / "r" / "spans.jsonl", more);
  idx.refresh();
  CHECK(r->spans().size() == 3);
  CHECK(r->spans_end() == 7);
  CHECK(r->spans().back().t1 == doctest::Approx(1014.5));
}

TEST_CASE("event stream: snapshot, then only new rows, resume by Last-Event-ID, gone") {
  zf::testing::temp_dir d("event_stream");
  fs::create_directories(d / "r");
  append(d / "r" / "metrics.jsonl", steps(1, 50));
  append(
      d / "r" / "spans.jsonl",
      "{\"start_unix\": 1000}\n{\"actor\": \"rank0\", \"what\": \"fwd\", \"t0\": 1, \"t1\": 2}\n");
  auto idx = std::make_shared<run_index>(d.path);
  idx->refresh();
  event_stream st(idx, "r", 800, std::nullopt);
  REQUIRE(st.found());
  auto ev = events(st.poll(10));
  REQUIRE(ev.size() == 2);
  CHECK(ev[0].first == "snapshot");
  CHECK(ev[0].second["cursor"] == "0.50");
  CHECK(ev[0].second["series"]["loss"]["x"].size() == 50);
  CHECK(ev[0].second["series"]["loss"]["y"].back().get<double>() == doctest::Approx(3.5));
  CHECK(ev[1].first == "spans");
  CHECK(ev[1].second["spans"][0]["actor"] == "rank0");
  CHECK(ev[1].second["spans"][0]["t0"].get<double>() == doctest::Approx(1001));
  CHECK(st.poll(11).empty());  // nothing new, no ping yet
  CHECK(st.poll(10 + event_stream::ping_s) == ": ping\n\n");

  append(d / "r" / "metrics.jsonl", steps(51, 60));
  idx->refresh();
  ev = events(st.poll(30));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].first == "append");
  CHECK(ev[0].second["cursor"] == "0.60");
  CHECK(ev[0].second["series"]["loss"]["x"].size() == 10);
  CHECK(ev[0].second["series"]["loss"]["x"][0] == 51);

  // A reconnect at 0.55 gets rows 56..60 only; a cursor from another generation or garbage gets
  // a snapshot.
  event_stream again(idx, "r", 800, "0.55");
  ev = events(again.poll(31));
  REQUIRE(!ev.empty());
  CHECK(ev[0].first == "append");
  CHECK(ev[0].second["series"]["loss"]["x"].size() == 5);
  for (const char* bad : {"7.55", "0.999", "x", "0.", ".5", "0.5.5"}) {
    event_stream s(idx, "r", 800, std::string(bad));
    CHECK_MESSAGE(events(s.poll(31))[0].first == "snapshot", bad);
  }
  // The state changes: an append says so even with no new rows.
  {
    std::ofstream(d / "r" / "run.json") << R"({"kind": "train", "state": "finished",
        "pid": 1, "start_unix": 900, "end_unix": 950, "total_steps": 60})";
  }
  idx->refresh();
  ev = events(st.poll(32));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].second["run"]["state"] == "finished");
  CHECK(ev[0].second["series"].empty());
  // The file rewritten: a new snapshot.
  { std::ofstream(d / "r" / "metrics.jsonl", std::ios::trunc) << steps(1, 5); }
  idx->refresh();
  ev = events(st.poll(33));
  CHECK(ev[0].first == "snapshot");
  CHECK(ev[0].second["cursor"] == "1.5");
  fs::remove_all(d / "r");
  idx->refresh();
  ev = events(st.poll(34));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].first == "gone");
  CHECK(st.done());
  CHECK(!event_stream(idx, "r", 800, std::nullopt).found());
}

TEST_CASE("run series: the latest moe_load is kept with its layer ids, a dense run has none") {
  run_series s;
  s.add(json::parse(R"({"step": 1, "loss": 4.5, "moe_dropped": 0.25, "moe_layers": [0, 1],
      "moe_load": [[0.25, 0.25, 0.25, 0.25], [0.5, 0.5]]})"));
  s.add(json::parse(R"({"step": 2, "loss": 4.0, "moe_dropped": 0.125, "moe_layers": [1, 3],
      "moe_load": [[0.24, 0.21, 0.27, 0.28], [0.42, "x", 0.17]]})"));
  s.add(json::parse(R"({"step": 3, "loss": 3.5, "val_loss": 3.75})"));  // an eval-only line
  // Scalars are columns like any other key; the arrays are not.
  CHECK(s.last("moe_dropped") == doctest::Approx(0.125));
  CHECK(std::find(s.keys().begin(), s.keys().end(), "moe_load") == s.keys().end());
  CHECK(std::find(s.keys().begin(), s.keys().end(), "moe_layers") == s.keys().end());
  REQUIRE(s.moe());
  CHECK(s.moe()->row == 1);
  std::string out;
  s.moe_json(out);
  const json m = json::parse(out);
  CHECK(m["x"] == 2);
  CHECK(m["layers"] == json::array({1, 3}));
  REQUIRE(m["load"].size() == 2);
  CHECK(m["load"][0].size() == 4);
  CHECK(m["load"][0][3].get<double>() == doctest::Approx(0.28));
  CHECK(m["load"][1].size() == 3);   // rows keep their own lengths
  CHECK(m["load"][1][1].is_null());  // not a number
  // moe_layers missing or too short: rows are labelled by their index.
  s.add(json::parse(R"({"step": 4, "moe_layers": [5], "moe_load": [[1.0], [0.5, 0.5]]})"));
  out.clear();
  s.moe_json(out);
  CHECK(json::parse(out)["layers"] == json::array({0, 1}));
  s.clear();
  CHECK(!s.moe());
  out.clear();
  s.moe_json(out);
  CHECK(out == "null");
  s.add(json::parse(R"({"step": 1, "loss": 4.5, "moe_load": 3})"));  // not an array: ignored
  CHECK(!s.moe());
}

TEST_CASE("event stream: an MoE run's moe_load reaches the page once per new value") {
  zf::testing::temp_dir d("event_stream_moe");
  fs::create_directories(d / "moe");
  fs::create_directories(d / "dense");
  auto moe_line = [](int step, double a) {
    return fmt::format(
        "{{\"step\": {}, \"loss\": 10.5, \"moe_dropped\": 0.07, \"moe_imbalance\": 1.69, "
        "\"moe_layers\": [0, 1], \"moe_load\": [[{}, 0.21, 0.27, 0.28], [0.42, 0.06, 0.17, "
        "0.35]]}}\n",
        step, a);
  };
  append(d / "moe" / "metrics.jsonl", moe_line(1, 0.24) + moe_line(2, 0.25));
  append(d / "dense" / "metrics.jsonl", steps(1, 5));
  auto idx = std::make_shared<run_index>(d.path);
  idx->refresh();

  event_stream st(idx, "moe", 800, std::nullopt);
  auto ev = events(st.poll(10));
  REQUIRE(!ev.empty());
  CHECK(ev[0].first == "snapshot");
  const json& snap = ev[0].second;
  CHECK(snap["series"]["moe_dropped"]["y"].back().get<double>() == doctest::Approx(0.07));
  CHECK(snap["series"]["moe_imbalance"]["y"].size() == 2);
  REQUIRE(snap.contains("moe"));
  CHECK(snap["moe"]["x"] == 2);
  CHECK(snap["moe"]["layers"] == json::array({0, 1}));
  REQUIRE(snap["moe"]["load"].size() == 2);
  CHECK(snap["moe"]["load"][0][0].get<double>() == doctest::Approx(0.25));
  CHECK(snap["moe"]["load"][1][3].get<double>() == doctest::Approx(0.35));

  // New rows with moe_load: the append carries the newest; an append of rows without it (an
  // eval line) and a state-only append do not repeat it.
  append(d / "moe" / "metrics.jsonl", moe_line(3, 0.5));
  idx->refresh();
  ev = events(st.poll(11));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].first == "append");
  REQUIRE(ev[0].second.contains("moe"));
  CHECK(ev[0].second["moe"]["x"] == 3);
  CHECK(ev[0].second["moe"]["load"][0][0].get<double>() == doctest::Approx(0.5));
  append(d / "moe" / "metrics.jsonl", "{\"step\": 3, \"val_loss\": 10.4}\n");
  idx->refresh();
  ev = events(st.poll(12));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].second["series"].contains("val_loss"));
  CHECK(!ev[0].second.contains("moe"));
  // A reconnect that resumes gets the latest moe_load with its first append.
  event_stream again(idx, "moe", 800, "0.3");
  ev = events(again.poll(13));
  REQUIRE(!ev.empty());
  CHECK(ev[0].first == "append");
  CHECK(ev[0].second["moe"]["x"] == 3);

  // A dense run never carries the key.
  event_stream dense(idx, "dense", 800, std::nullopt);
  ev = events(dense.poll(10));
  REQUIRE(!ev.empty());
  CHECK(ev[0].first == "snapshot");
  CHECK(!ev[0].second.contains("moe"));
  append(d / "dense" / "metrics.jsonl", steps(6, 7));
  idx->refresh();
  ev = events(dense.poll(11));
  REQUIRE(ev.size() == 1);
  CHECK(!ev[0].second.contains("moe"));
  // The MoE file rewritten as a dense one: the new snapshot has no moe either.
  { std::ofstream(d / "moe" / "metrics.jsonl", std::ios::trunc) << steps(1, 2); }
  idx->refresh();
  ev = events(st.poll(14));
  REQUIRE(!ev.empty());
  CHECK(ev[0].first == "snapshot");
  CHECK(!ev[0].second.contains("moe"));
}

TEST_CASE("console views: run list, run detail, Prometheus text") {
  zf::testing::temp_dir d("console_views");
  fs::create_directories(d / "r");
  append(d / "r" / "metrics.jsonl", steps(1, 3));
  {
    std::ofstream(d / "r" / "run.json") << R"({"kind": "rl", "state": "failed",
        "pid": 1, "start_unix": 900, "end_unix": 950, "total_steps": 60, "message": "boom",
        "config": "[rlhf]\n"})";
  }
  run_index idx(d.path);
  idx.refresh();
  const json runs = json::parse(runs_json(idx, 1000));
  REQUIRE(runs["runs"].size() == 1);
  CHECK(runs["runs"][0]["state"] == "failed");
  CHECK(runs["runs"][0]["message"] == "boom");
  CHECK(runs["runs"][0]["last_step"] == 3);
  CHECK(runs["runs"][0]["eta_s"].is_null());  // not running
  const json one = json::parse(*run_json(idx, "r", 1000));
  CHECK(one["config"] == "[rlhf]\n");
  CHECK(one["x"] == "step");
  CHECK(one["keys"] == json::array({"elapsed_s", "loss", "lr"}));  // a parsed row's key order
  CHECK(!run_json(idx, "nope", 0));
  const std::string prom = prometheus_text(idx);
  CHECK(prom.find("zeroflow_run_info{run=\"r\",kind=\"rl\",state=\"failed\"} 1\n") !=
        std::string::npos);
  CHECK(prom.find("zeroflow_run_step{run=\"r\"} 3\n") != std::string::npos);
  CHECK(prom.find("zeroflow_run_value{run=\"r\",key=\"loss\"} 4.91\n") != std::string::npos);
  // A folder whose name is not UTF-8: still a run, shown with U+FFFD, never an exception.
  fs::create_directories(d / "bad\xff");
  append(d / "bad\xff" / "metrics.jsonl", steps(1, 2));
  idx.refresh();
  const json both = json::parse(runs_json(idx, 1000));
  REQUIRE(both["runs"].size() == 2);
  CHECK(json::parse(*run_json(idx, "bad\xff", 1000))["name"] == "bad\xef\xbf\xbd");
}
