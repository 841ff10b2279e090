// A server records itself in its run folder (pipelines/stages_serve: the gateway stage with
// record_options): a tiny engine answers a few requests through the graph, metrics.jsonl gets a
// line every 0.1 s whose windows add up to the tokens and requests served, and run.json says
// serve, finished after a requested stop, failed when another stage failed the graph.
#include <doctest/doctest.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "pipelines/graph_run.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/stages_serve.hpp"
#include "runtime/model/model.hpp"
#include "runtime/monitor/run_status.hpp"
#include "test_util.hpp"

using namespace zf;
using nlohmann::json;

namespace {

constexpr int k_requests = 3, k_tokens = 6;

run_config tiny_config() {
  run_config cfg;
  cfg.model.n_layer = 2, cfg.model.n_head = 2, cfg.model.n_embd = 32, cfg.model.n_positions = 64;
  cfg.data.data_dir = ZF_DATA_DIR;
  cfg.server.port = 0;
  cfg.server.record_every_s = 0.1;
  return cfg;
}

std::shared_ptr<const lm_weights> tiny_weights(const run_config& cfg) {
  const param_layout layout = layout_of(cfg.model);
  fbuffer init(layout.total);
  init_params(layout, cfg.model.n_layer, 7, init.data());
  return std::make_shared<const lm_weights>(make_lm_weights(spec_of(cfg.model), std::move(init)));
}

// Sends k_requests greedy requests of k_tokens tokens (past eos: each ends by length), one after
// the other, lets the recorder write a few more lines, then stops the run (or fails it).
struct client : stage {
  in_port<backend_ref> backend = input<backend_ref>("backend");
  std::atomic<bool>* stop = nullptr;
  bool fail = false;
  std::filesystem::path wait_for;  // the gateway records once this exists ("": at once)
  void start(stage_context& ctx) override {
    ctx.on(backend, [this](const std::shared_ptr<const backend_ref>& b) {
      // the gateway gets the backend at the same time: its recorder's first snapshot, taken
      // before run.json is written, must come before the first token
      for (int i = 0; i < 500 && !wait_for.empty() && !std::filesystem::exists(wait_for); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      for (int i = 0; i < k_requests; ++i) {
        serve::completion_request r;
        r.prompt = {464, 6450, 318, 257 + i};
        r.max_tokens = k_tokens;
        r.sampling.temperature = 0;
        r.ignore_eos = true;
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        auto s = b->backend->submit(r, [&](const serve::completion_event& e) {
          std::lock_guard lk(mu);
          if (e.finish != serve::finish_reason::none) done = true;
          cv.notify_all();
        });
        if (s.status != 200) throw error("refused: " + s.message);
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return done; });
        lk.unlock();
        std::this_thread::sleep_for(std::chrono::milliseconds(120));  // windows between them
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      if (fail) throw error("the client gave up");
      *stop = true;
    });
  }
  void inputs_closed(stage_context&) override {}
};

// engine -> gateway (recording) and engine -> client; returns run_graph's error ("" if none).
// run_json: where the gateway will write run.json (the client starts once it is there).
std::string serve_and_record(const stages::record_options& rec, bool fail,
                             const std::filesystem::path& run_json = {}) {
  const run_config cfg = tiny_config();
  std::atomic<bool> stop{false};
  stages::record_options r = rec;
  r.stop = &stop;
  graph g;
  auto& engine = g.add<stages::engine_stage>("engine", tiny_weights(cfg), open_tokenizer(cfg).first,
                                             engine_config{.max_seqs = 4, .threads = 1});
  auto& gw = g.add<stages::gateway_stage>("gateway", actors::gateway_options{.port = 0}, r);
  auto& c = g.add<client>("client");
  c.stop = &stop;
  c.fail = fail;
  if (!r.run_dir.empty() && r.every_s > 0) c.wait_for = run_json;
  g.connect(engine.backend, gw.backend);
  g.connect(engine.backend, c.backend);
  try {
    run_graph(g, {.stop = &stop});
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

std::vector<json> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);) {
    CAPTURE(line);
    rows.push_back(json::parse(line));  // throws (fails the test) on a bad line
    REQUIRE(rows.back().is_object());
  }
  return rows;
}

}  // namespace

TEST_CASE("serve record: metrics.jsonl windows add up to what was served, run.json finished") {
  testing::temp_dir d("serve_record");
  // a made-up name that exists already: the server takes run-2 instead of sharing it
  std::filesystem::create_directories(d / "run");
  const run_config cfg = tiny_config();
  const std::string err = serve_and_record(
      {.run_dir = (d / "run").string(), .fresh = true, .every_s = 0.1, .config_toml = to_toml(cfg)},
      false, d / "run-2" / "run.json");
  REQUIRE(err == "");
  CHECK(std::filesystem::is_empty(d / "run"));
  const auto dir = d / "run-2";

  const std::vector<json> rows = read_lines(dir / "metrics.jsonl");
  REQUIRE(rows.size() >= 5);  // ~0.85 s of serving, a line every 0.1 s, and the last one
  double t = 0, tokens = 0, busiest = 0;
  uint64_t by_length = 0, by_other = 0;
  for (const json& r : rows) {
    CAPTURE(r.dump());
    CHECK(r["t"].get<double>() > t);
    CHECK(r["kv_blocks_total"].get<int>() > 0);
    CHECK(r["weights_version"] == 0);
    const double rate = r.value("tokens_per_s", 0.0);
    tokens += rate * (r["t"].get<double>() - t);
    busiest = std::max(busiest, rate);
    by_length += r["requests_length"].get<uint64_t>();
    for (const char* k : {"requests_stop", "requests_cancelled", "requests_error"})
      by_other += r[k].get<uint64_t>();
    if (r.contains("ttft_p50_ms")) CHECK(r["ttft_p50_ms"].get<double>() > 0);
    t = r["t"].get<double>();
  }
  CHECK(busiest > 0);
  CHECK(by_length == k_requests);  // every request once, in the window it finished in
  CHECK(by_other == 0);
  CHECK(tokens == doctest::Approx(k_requests * k_tokens).epsilon(0.05));
  // some window saw a first token: its TTFT percentiles are there
  CHECK(std::any_of(rows.begin(), rows.end(),
                    [](const json& r) { return r.contains("ttft_p50_ms"); }));

  const auto st = monitor::read_run_status(dir);
  REQUIRE(st.has_value());
  CHECK(st->kind == "serve");
  CHECK(monitor::to_string(st->state) == std::string("finished"));
  CHECK(st->total_steps == 0);
  CHECK(st->end_unix >= st->start_unix);
  CHECK(testing::contains(st->config, "record_every_s = 0.1"));

  // The engine's steps, coalesced into busy periods: spans.jsonl, for the console's timeline.
  const std::vector<json> spans = read_lines(dir / "spans.jsonl");
  REQUIRE(spans.size() >= 2);
  CHECK(spans[0].contains("start_unix"));
  double busy = 0, last_end = 0;
  for (std::size_t i = 1; i < spans.size(); ++i) {
    CAPTURE(spans[i].dump());
    CHECK(spans[i]["actor"] == "engine");
    CHECK(spans[i]["what"] == "step");
    const double t0 = spans[i]["t0"], t1 = spans[i]["t1"];
    CHECK(t1 >= t0);
    CHECK(t0 >= last_end);  // in order, never overlapping
    busy += t1 - t0;
    last_end = t1;
  }
  CHECK(busy > 0);
  CHECK(busy <= t + 0.5);  // no more busy time than the server ran
}

TEST_CASE("serve record: a graph that fails leaves run.json failed, and off means no folder") {
  testing::temp_dir d("serve_record_fail");
  const std::string err =
      serve_and_record({.run_dir = (d / "run").string(), .every_s = 0.1, .config_toml = "x = 1\n"},
                       true, d / "run" / "run.json");
  CHECK(testing::contains(err, "the client gave up"));
  const auto st = monitor::read_run_status(d / "run");
  REQUIRE(st.has_value());
  CHECK(monitor::to_string(st->state) == std::string("failed"));
  CHECK(testing::contains(st->message, "stopped without a stop request"));
  CHECK(!read_lines(d / "run" / "metrics.jsonl").empty());

  // no run folder, or no interval: nothing recorded
  CHECK(serve_and_record({.run_dir = "", .every_s = 0.1}, false) == "");
  CHECK(serve_and_record({.run_dir = (d / "off").string(), .every_s = 0}, false) == "");
  CHECK(!std::filesystem::exists(d / "off"));
}
