// A serving engine's figures sampled over time (runtime/serve/serve_sample, serve_recorder):
// percentiles of histogram windows against hand-computed interpolations (Prometheus'
// histogram_quantile rule), rates and hit rates of counter differences, several engines merged,
// and the recorder's metrics.jsonl lines against the snapshots its source handed out.
#include <doctest/doctest.h>

#include <fstream>
#include <mutex>
#include <thread>

#include "runtime/serve/backend_pool.hpp"
#include "runtime/serve/engine_core.hpp"
#include "runtime/serve/serve_recorder.hpp"
#include "runtime/serve/serve_sample.hpp"
#include "test_util.hpp"

using namespace zf;
using namespace zf::serve;
using nlohmann::json;

namespace {

// bounds 1, 2, 4 with 2 observations in (0, 1], 4 in (1, 2], 4 in (2, 4], `over` above 4.
histogram_snapshot three_buckets(uint64_t over = 0) {
  return {{1, 2, 4}, {2, 6, 10, 10 + over}, 0, 10 + over};
}

// A backend that serves nothing and reports fixed figures (or none: an engine elsewhere).
class fixed_backend final : public completion_backend {
 public:
  explicit fixed_backend(std::optional<engine_snapshot> s) : s_(std::move(s)) {}
  const std::string& model_name() const override { return name_; }
  int context_length() const override { return 8; }
  int vocab_size() const override { return 8; }
  std::vector<int> encode(std::string_view) const override { return {}; }
  std::string chat_prompt(const std::vector<chat_message>&) const override { return ""; }
  std::string token_bytes(int) const override { return ""; }
  submit_result submit(completion_request, event_sink) override { return {0, 503, 0, "no"}; }
  void cancel(uint64_t) override {}
  std::string metrics_text() const override { return ""; }
  std::optional<engine_snapshot> snapshot() const override { return s_; }

 private:
  std::string name_ = "fixed";
  std::optional<engine_snapshot> s_;
};

std::vector<json> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);) {
    CAPTURE(line);
    REQUIRE(line.find("nan") == std::string::npos);
    REQUIRE(line.find("inf") == std::string::npos);
    rows.push_back(json::parse(line));  // throws (fails the test) on a bad line
    REQUIRE(rows.back().is_object());
  }
  return rows;
}

}  // namespace

TEST_CASE("serve sample: histogram quantiles interpolate inside the bucket, as Prometheus does") {
  const histogram_snapshot h = three_buckets();
  // rank 5 of 10: bucket (1, 2] holds ranks 3..6, so 1 + (2 - 1) * (5 - 2) / 4
  CHECK(*histogram_quantile(h, 0.5) == doctest::Approx(1.75));
  CHECK(*histogram_quantile(h, 0.9) == doctest::Approx(2 + 2 * 3.0 / 4));  // (2, 4], rank 9
  CHECK(*histogram_quantile(h, 0.1) == doctest::Approx(0.5));              // first bucket: from 0
  CHECK(*histogram_quantile(h, 0.6) == doctest::Approx(2.0));  // rank 6: the bucket's top
  // a rank among the observations above the last bound: the largest finite bound
  CHECK(*histogram_quantile(three_buckets(2), 0.99) == doctest::Approx(4.0));
  // nothing observed, malformed counts, a q outside (0, 1): no answer
  CHECK(!histogram_quantile({{1, 2}, {0, 0, 0}, 0, 0}, 0.5));
  CHECK(!histogram_quantile({{1, 2}, {1, 2}, 0, 2}, 0.5));     // one count short
  CHECK(!histogram_quantile({{1, 2}, {3, 2, 2}, 0, 2}, 0.5));  // not cumulative
  CHECK(!histogram_quantile(h, 0));
  CHECK(!histogram_quantile(h, 1));
}

TEST_CASE("serve sample: the engine's histograms and counters come out of snapshot() as kept") {
  engine_stats st;
  for (double v : {0.004, 0.03, 0.03, 0.2, 70.0}) st.ttft.observe(v);
  st.generated_tokens = 12, st.cache_queries = 8, st.cache_hits = 2, st.blocks_total = 16;
  st.finished[static_cast<int>(finish_reason::length)] = 3;
  const engine_snapshot s = st.snapshot();
  CHECK(s.ttft.bounds == st.ttft.bounds);
  CHECK(s.ttft.counts == st.ttft.counts);
  CHECK(s.ttft.total == 5);
  CHECK(s.ttft.counts.back() == 5);
  CHECK(s.tpot.total == 0);
  CHECK(s.generated_tokens == 12);
  CHECK(s.blocks_total == 16);
  CHECK(s.finished[2] == 3);
  // 5 observations, rank 2.5 falls in (0.025, 0.05] holding ranks 2..3: 0.025 + 0.025 * 1.5 / 2
  CHECK(*histogram_quantile(s.ttft, 0.5) == doctest::Approx(0.025 + 0.025 * 0.75));
}

TEST_CASE("serve sample: a window's rates, hit rate, percentiles and counts are differences") {
  engine_snapshot prev, cur;
  prev.generated_tokens = 100, cur.generated_tokens = 400;
  prev.prompt_tokens = 50, cur.prompt_tokens = 250;
  prev.cache_queries = 40, cur.cache_queries = 140;
  prev.cache_hits = 10, cur.cache_hits = 85;
  prev.finished[1] = 3, cur.finished[1] = 7;  // stop
  prev.finished[2] = 1, cur.finished[2] = 1;  // length
  cur.finished[3] = 2;                        // cancelled
  prev.preemptions = 2, cur.preemptions = 5;
  prev.ttft = three_buckets();
  cur.ttft = {{1, 2, 4}, {4, 12, 20, 20}, 0, 20};  // the window: 2, 4, 4 more in the buckets
  prev.tpot = cur.tpot = three_buckets();          // nothing new
  cur.waiting = 3, cur.running = 2, cur.blocks_used = 9, cur.blocks_total = 64;
  prev.waiting = 7;  // gauges are the window's end, not differences
  cur.weights_version = 4;

  const window_figures f = window_of(prev, cur, 2.0);
  CHECK(f.queue_depth == 3);
  CHECK(f.running == 2);
  CHECK(f.kv_blocks_used == 9);
  CHECK(f.kv_blocks_total == 64);
  CHECK(f.weights_version == 4);
  CHECK(*f.tokens_per_s == doctest::Approx(150.0));         // 300 tokens in 2 s
  CHECK(*f.prompt_tokens_per_s == doctest::Approx(100.0));  // 200 in 2 s
  CHECK(*f.prefix_hit_rate == doctest::Approx(0.75));       // 75 of 100
  CHECK(f.requests[1] == 4);
  CHECK(f.requests[2] == 0);
  CHECK(f.requests[3] == 2);
  CHECK(f.preemptions == 3);
  // window counts 2, 4, 4 (cumulative 2, 6, 10): the same closed forms as above, in ms
  CHECK(*f.ttft_p50_ms == doctest::Approx(1750.0));
  CHECK(*f.ttft_p90_ms == doctest::Approx(3500.0));
  CHECK(*f.ttft_p99_ms == doctest::Approx(1000 * (2 + 2 * 3.9 / 4)));
  CHECK(!f.tpot_p50_ms);  // no observation in the window: absent
  CHECK(!f.tpot_p99_ms);

  // no prefix-cache query and a window of no length: hit rate and rates absent
  const window_figures idle = window_of(cur, cur, 0.0);
  CHECK(!idle.prefix_hit_rate);
  CHECK(!idle.tokens_per_s);
  CHECK(!idle.prompt_tokens_per_s);
  CHECK(!idle.ttft_p50_ms);
  CHECK(idle.requests[1] == 0);

  // a counter that went down restarted: the window counts its current value
  engine_snapshot restarted = cur;
  restarted.generated_tokens = 30;
  CHECK(*window_of(cur, restarted, 1.0).tokens_per_s == doctest::Approx(30.0));
}

TEST_CASE("serve sample: engines merge by summing, the oldest weights version, same bounds only") {
  engine_snapshot a, b;
  a.waiting = 1, b.waiting = 2;
  a.blocks_total = 10, b.blocks_total = 20;
  a.generated_tokens = 5, b.generated_tokens = 7;
  a.finished[1] = 1, b.finished[1] = 2;
  a.weights_version = 3, b.weights_version = 2;
  a.ttft = three_buckets(), b.ttft = three_buckets(1);
  a.tpot = three_buckets(), b.tpot = {{9}, {1, 1}, 0, 1};  // other bounds: left out
  const engine_snapshot m = merge({a, b});
  CHECK(m.waiting == 3);
  CHECK(m.blocks_total == 30);
  CHECK(m.generated_tokens == 12);
  CHECK(m.finished[1] == 3);
  CHECK(m.weights_version == 2);
  CHECK(m.ttft.counts == std::vector<uint64_t>{4, 12, 20, 21});
  CHECK(m.ttft.total == 21);
  CHECK(m.tpot.counts == a.tpot.counts);
  CHECK(merge({}).generated_tokens == 0);
}

TEST_CASE("serve sample: a backend pool reports its engines merged, leaving out those with none") {
  engine_snapshot a, b;
  a.generated_tokens = 5, b.generated_tokens = 7;
  a.weights_version = 3, b.weights_version = 2;
  std::vector<std::unique_ptr<completion_backend>> engines;
  engines.push_back(std::make_unique<fixed_backend>(a));
  engines.push_back(std::make_unique<fixed_backend>(std::nullopt));
  engines.push_back(std::make_unique<fixed_backend>(b));
  const backend_pool pool(std::move(engines));
  const auto s = pool.snapshot();
  REQUIRE(s.has_value());
  CHECK(s->generated_tokens == 12);
  CHECK(s->weights_version == 2);
  std::vector<std::unique_ptr<completion_backend>> remote;
  remote.push_back(std::make_unique<fixed_backend>(std::nullopt));
  CHECK(!backend_pool(std::move(remote)).snapshot());
}

TEST_CASE("serve sample: a line is one JSON object, absent figures left out, never NaN") {
  engine_snapshot prev, cur;
  cur.generated_tokens = 10, cur.blocks_total = 8;
  cur.finished[1] = 2;
  const std::string text = serve_recorder::line(1.5, 1796520000.25, window_of(prev, cur, 0.5));
  const json j = json::parse(text);
  CHECK(j["t"] == 1.5);
  CHECK(j["unix"] == 1796520000.25);
  CHECK(j["tokens_per_s"] == 20.0);
  CHECK(j["kv_blocks_total"] == 8);
  CHECK(j["requests_stop"] == 2);
  CHECK(j["requests_length"] == 0);
  CHECK(j["requests_cancelled"] == 0);
  CHECK(j["requests_error"] == 0);
  CHECK(j["weights_version"] == 0);
  for (const char* absent : {"prefix_hit_rate", "ttft_p50_ms", "tpot_p99_ms"})
    CHECK_MESSAGE(!j.contains(absent), absent);
  window_figures nan;
  nan.tokens_per_s = std::nan("");  // never written as a number JSON cannot hold
  CHECK(!json::parse(serve_recorder::line(0, 0, nan)).contains("tokens_per_s"));
}

TEST_CASE(
    "serve recorder: a line per interval, each window's counts and rates from its snapshots") {
  testing::temp_dir d("serve_recorder");
  std::mutex mu;
  int calls = 0;
  bool throw_once = true;
  auto source = [&]() -> std::optional<engine_snapshot> {
    std::lock_guard lk(mu);
    if (calls == 2 && throw_once) {  // a failing source is reported, never thrown into the server
      throw_once = false;
      throw std::runtime_error("engine busy");
    }
    engine_snapshot s;
    s.generated_tokens = 10 * static_cast<uint64_t>(calls);  // 10 more per snapshot
    s.finished[1] = static_cast<uint64_t>(calls);            // one more stop per snapshot
    s.blocks_total = 4;
    ++calls;
    return s;
  };
  const auto file = d / "run" / "metrics.jsonl";  // the folder is made
  serve_recorder rec(file, 0.1, source);
  std::this_thread::sleep_for(std::chrono::milliseconds(650));
  rec.stop();
  rec.stop();  // once only
  CHECK(rec.failures() == 1);
  const std::vector<json> rows = read_lines(file);
  REQUIRE(rows.size() >= 4);
  CHECK(static_cast<int>(rows.size()) == rec.lines());
  CHECK(static_cast<int>(rows.size()) == calls - 1);  // the first snapshot is the baseline
  double t = 0;
  uint64_t stops = 0;
  for (const json& r : rows) {
    CAPTURE(r.dump());
    CHECK(r["t"].get<double>() > t);
    CHECK(r["unix"].get<double>() > 1.7e9);
    CHECK(r["kv_blocks_total"] == 4);
    // 10 tokens per window whatever its length (the failed snapshot's window is two long)
    const double window = r["t"].get<double>() - t;
    CHECK(r["tokens_per_s"].get<double>() * window == doctest::Approx(10.0).epsilon(0.05));
    stops += r["requests_stop"].get<uint64_t>();
    t = r["t"].get<double>();
  }
  CHECK(stops == static_cast<uint64_t>(calls - 1));  // every stop counted once
}

TEST_CASE("serve recorder: a bad interval or an unwritable file is refused, naming it") {
  testing::temp_dir d("serve_recorder_bad");
  auto none = []() -> std::optional<engine_snapshot> { return std::nullopt; };
  CHECK(testing::contains(testing::error_of([&] { serve_recorder(d / "m.jsonl", 0, none); }),
                          "m.jsonl: the recording interval must be a positive number of "
                          "seconds, got 0"));
  std::filesystem::create_directories(d / "dir.jsonl");
  CHECK(testing::contains(
      testing::error_of([&] { serve_recorder(d / "dir.jsonl", 1, none); }),
      "cannot open " + (d / "dir.jsonl").string() + " for appending: Is a directory"));
  // a source with no figures: no line (the windows are skipped), no failure
  serve_recorder quiet(d / "q.jsonl", 0.02, none);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  quiet.stop();
  CHECK(quiet.lines() == 0);
  CHECK(quiet.failures() == 0);
}
