// What the console reads (runtime/monitor): a run's JSON-lines file followed as it grows, with
// garbage and cut lines skipped and counted, a rewritten file read again; long series reduced to
// min and max per chart column, spikes and the last value kept.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <thread>

#include "runtime/monitor/downsample.hpp"
#include "runtime/monitor/jsonl_tail.hpp"
#include "runtime/monitor/span_log.hpp"
#include "test_util.hpp"

using namespace zf::monitor;

namespace {
void append(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p, std::ios::app | std::ios::binary) << text;
}
}  // namespace

TEST_CASE("jsonl tail: new lines as they come, a partial line waits, garbage is counted") {
  zf::testing::temp_dir d("jsonl_tail");
  const auto file = d.path / "metrics.jsonl";
  jsonl_tail t(file);
  CHECK(t.poll().rows.empty());  // not there yet: nothing, no error
  append(file, "{\"step\": 1, \"loss\": 2.5}\n{\"step\": 2, \"lo");
  auto b = t.poll();
  REQUIRE(b.rows.size() == 1);
  CHECK(b.rows[0]["loss"] == 2.5);
  CHECK(t.poll().rows.empty());  // the writer is mid-line
  append(file, "ss\": 2.25}\n\n");
  b = t.poll();
  REQUIRE(b.rows.size() == 1);
  CHECK(b.rows[0]["step"] == 2);
  CHECK(b.skipped == 0);  // a blank line is not garbage
  // A killed writer's cut line, then a resumed writer's lines; a non-object line too.
  append(file, "{\"step\": 3, \"lo\n[1, 2]\nnot json at all\n{\"step\": 4}\r\n");
  b = t.poll();
  REQUIRE(b.rows.size() == 1);
  CHECK(b.rows[0]["step"] == 4);
  CHECK(b.skipped == 3);
  CHECK(t.skipped_total() == 3);
  CHECK(t.rows_total() == 3);
  // A writer gone mid-line: finish() counts the pending bytes once.
  append(file, "{\"step\": 5");
  CHECK(t.poll().rows.empty());
  CHECK(t.finish() == 1);
  CHECK(t.skipped_total() == 4);
  CHECK(t.offset() == std::filesystem::file_size(file));
}

TEST_CASE("jsonl tail: a rewritten file is read again from its start, long lines are dropped") {
  zf::testing::temp_dir d("jsonl_tail_reset");
  const auto file = d.path / "metrics.jsonl";
  append(file, "{\"step\": 1}\n{\"step\": 2}\n{\"step\": 3}\n");
  jsonl_tail t(file, /*max_read=*/16, /*max_line=*/64);
  std::vector<int> steps;
  for (int i = 0; i < 10; ++i)  // 16 bytes per poll: the backlog arrives over several polls
    for (auto& r : t.poll().rows) steps.push_back(r["step"]);
  CHECK(steps == std::vector<int>{1, 2, 3});
  // A resumed run keeps its first line and goes on: shorter than what was read.
  std::ofstream(file, std::ios::trunc) << "{\"step\": 1}\n";
  auto b = t.poll();
  CHECK(b.reset);
  REQUIRE(b.rows.size() == 1);
  CHECK(b.rows[0]["step"] == 1);
  // A 200-byte line over max_line 64, across polls: skipped once, the next line still read.
  append(file, "{\"junk\": \"" + std::string(200, 'x') + "\"}\n{\"step\": 2}\n");
  std::vector<int> after;
  std::size_t skipped = 0;
  for (int i = 0; i < 30; ++i) {
    auto c = t.poll();
    skipped += c.skipped;
    for (auto& r : c.rows) after.push_back(r["step"]);
  }
  CHECK(after == std::vector<int>{2});
  CHECK(skipped == 1);
}

TEST_CASE("downsample: min and max per column keep spikes and the ends, in x order") {
  std::vector<point> pts;
  for (int i = 0; i < 1000000; ++i) pts.push_back({double(i), std::sin(i * 1e-3)});
  pts[777777].y = 50;   // a spike
  pts[123456].y = -40;  // a dip
  const auto out = downsample_minmax(pts, 400);
  CHECK(out.size() <= 802);
  CHECK(out.size() >= 400);
  CHECK(out.front().x == 0);
  CHECK(out.back().x == 999999);  // the last value is the series' last
  bool spike = false, dip = false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i) CHECK(out[i].x > out[i - 1].x);
    spike |= out[i].y == 50;
    dip |= out[i].y == -40;
  }
  CHECK(spike);
  CHECK(dip);
  // short series come back whole; one bucket still keeps min, max and the ends
  std::vector<point> few = {{0, 1}, {1, 5}, {2, -1}, {3, 2}};
  CHECK(downsample_minmax(few, 10).size() == 4);
  const auto one = downsample_minmax(pts, 1);
  CHECK(one.size() == 4);  // first, dip, spike, last
  CHECK(one[1].y == -40);
  CHECK(one[2].y == 50);
}

TEST_CASE("span log: lines from many threads are whole, counted, and after the start line") {
  zf::testing::temp_dir d("span_log");
  const auto file = d.path / "spans.jsonl";
  {
    span_log log(file, /*flush_bytes=*/256);  // small: many writes while the threads add
    std::vector<std::thread> th;
    for (int t = 0; t < 4; ++t)
      th.emplace_back([&, t] {
        for (int i = 0; i < 500; ++i) {
          const auto now = span_log::clock::now();
          log.add("actor \"" + std::to_string(t) + "\"", "work", now, now);
        }
      });
    for (auto& x : th) x.join();
    CHECK(log.spans() == 2000);
    CHECK(log.failures() == 0);
  }
  jsonl_tail tail(file);
  const auto b = tail.poll();
  CHECK(b.skipped == 0);
  REQUIRE(b.rows.size() == 2001);
  CHECK(b.rows[0].contains("start_unix"));
  std::map<std::string, int> per_actor;
  for (std::size_t i = 1; i < b.rows.size(); ++i) ++per_actor[b.rows[i]["actor"]];
  CHECK(per_actor.size() == 4);
  CHECK(per_actor["actor \"2\""] == 500);  // quotes in a name stay valid JSON
  // a log in a folder that does not exist counts its failed writes and throws nothing
  span_log lost(d.path / "no" / "such" / "dir" / "spans.jsonl");
  lost.add("a", "b", span_log::clock::now(), span_log::clock::now());
  lost.flush();
  CHECK(lost.failures() >= 1);
}

TEST_CASE("span coalescer: steps close together become one span, a gap or max length splits") {
  zf::testing::temp_dir d("span_coalescer");
  using ms = std::chrono::milliseconds;
  const auto file = d.path / "spans.jsonl";
  {
    span_coalescer c(std::make_shared<span_log>(file), "engine", "step", ms(2), ms(50));
    const auto t = span_log::clock::now();
    c.add(t, t + ms(3));          // one busy period: steps back to back,
    c.add(t + ms(4), t + ms(7));  // 1 ms apart
    c.add(t + ms(8), t + ms(10));
    c.add(t + ms(20), t + ms(21));  // 10 ms later: a new span
    c.flush_idle(t + ms(22));       // not idle long enough yet
    c.flush_idle(t + ms(30));       // idle: written now
    for (int i = 0; i < 30; ++i) c.add(t + ms(100 + 3 * i), t + ms(102 + 3 * i));  // 90 ms busy
  }  // the last span at destruction
  jsonl_tail tail(file);
  const auto rows = tail.poll().rows;
  REQUIRE(rows.size() == 1 + 4);
  auto len = [&](std::size_t i) {
    return rows[i]["t1"].get<double>() - rows[i]["t0"].get<double>();
  };
  CHECK(len(1) == doctest::Approx(0.010).epsilon(0.01));
  CHECK(len(2) == doctest::Approx(0.001).epsilon(0.01));
  CHECK(len(3) == doctest::Approx(0.050).epsilon(0.05));  // cut at max_len: a busy actor shows live
  CHECK(len(4) == doctest::Approx(0.039).epsilon(0.05));
  CHECK(rows[3]["t1"].get<double>() <= rows[4]["t0"].get<double>());
}
