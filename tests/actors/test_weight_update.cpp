// Weights that change while serving (completion_backend::update_weights*, engine_core's swap):
// after a swap the engine answers exactly as a fresh engine on the new weights; a request that
// runs across swaps continues, from each swap on, exactly as the new weights decode its prefix;
// no step mixes versions; weights of another shape are refused and serving goes on; and over
// HTTP, POST /v1/update_weights_from_disk loads zeroflow checkpoints and Hugging Face folders,
// with system_fingerprint naming the version.
#include <doctest/doctest.h>

#include <algorithm>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "actors/engine.hpp"
#include "actors/engine_helpers.hpp"
#include "actors/fake_backend.hpp"
#include "actors/gateway.hpp"
#include "actors/http_client.hpp"
#include "runtime/api/openai.hpp"
#include "storage/checkpoint.hpp"
#include "storage/lm_loader.hpp"
#include "test_util.hpp"

using namespace zf;
using namespace zf::testing;
using weights_ptr = std::shared_ptr<const lm_weights>;

namespace {

weights_ptr shared_weights(uint64_t seed) {
  return std::make_shared<const lm_weights>(test_weights(seed));
}

// Greedy tokens of each prompt (max_tokens each) on a fresh engine serving w.
std::vector<std::vector<int>> fresh_greedy(const weights_ptr& w,
                                           const std::vector<std::vector<int>>& prompts,
                                           const std::vector<int>& max_tokens) {
  collector c;  // before the engine: its destructor still calls sinks (cancelled)
  auto eng = actors::make_engine(w, gpt2_tok(), {});
  std::vector<uint64_t> ids;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    auto s = eng->submit(greedy(prompts[i], max_tokens[i]), c.sink());
    REQUIRE(s.status == 200);
    ids.push_back(s.id);
  }
  std::vector<std::vector<int>> out;
  for (uint64_t id : ids) {
    REQUIRE(c.wait({{id, 1}}));
    out.push_back(c.by_id[id].tokens[0]);
  }
  return out;
}

std::vector<int> run_greedy(serve::completion_backend& eng, collector& c,
                            const std::vector<int>& prompt, int max_tokens) {
  auto s = eng.submit(greedy(prompt, max_tokens), c.sink());
  REQUIRE(s.status == 200);
  REQUIRE(c.wait({{s.id, 1}}));
  std::lock_guard lk(c.mu);
  for (uint64_t v : c.by_id[s.id].versions[0]) CHECK(v == eng.weights_version());
  return c.by_id[s.id].tokens[0];
}

std::vector<int> long_prompt() {  // several 16-token blocks: the prefix cache holds some
  return gpt2_tok().encode(
      "It is a way I have of driving off the spleen and regulating the circulation. Whenever I "
      "find myself growing grim about the mouth; whenever it is a damp, drizzly November");
}

}  // namespace

TEST_CASE("weights: after a swap the engine answers as a fresh engine on the new weights") {
  collector c;
  auto eng = actors::make_engine(test_weights(), gpt2_tok(), {});
  const auto prompt = long_prompt();
  REQUIRE(prompt.size() > 32);
  const auto before = run_greedy(*eng, c, prompt, 12);  // its prompt blocks are now cached
  CHECK(eng->weights_version() == 0);

  const weights_ptr v1 = shared_weights(7);
  CHECK(eng->update_weights(1, v1) == 1);
  CHECK(eng->weights_version() == 1);
  const auto after = run_greedy(*eng, c, prompt, 12);
  const auto fresh = fresh_greedy(v1, {prompt}, {12});
  CHECK(after == fresh[0]);  // the prefix cache was flushed: no block of the old weights reused
  CHECK(after != before);
  const std::string m = eng->metrics_text();
  CHECK(metric(m, "zeroflow_weights_version") == 1);
  CHECK(metric(m, "zeroflow_weight_updates_total") == 1);
  CHECK(metric(m, "zeroflow_kv_blocks_used") == 0);

  // Versions only grow; without one the next is the served + 1.
  CHECK(error_of([&] { eng->update_weights(1, shared_weights(8)); }) ==
        "weights version 1 is not newer than the served version 1");
  CHECK(eng->update_weights(41, shared_weights(8)) == 41);
  std::promise<serve::weights_result> next;
  eng->update_weights_async(v1, std::nullopt,
                            [&](const serve::weights_result& r) { next.set_value(r); });
  const auto r = next.get_future().get();
  CHECK(r.status == 200);
  CHECK(r.version == 42);
  CHECK(run_greedy(*eng, c, prompt, 12) == fresh[0]);
}

namespace {

// Holds the engine thread inside a sink (stop()) until the test thread, having seen it there
// (wait()), has queued a weight update and release()s it: the update lands exactly between that
// step and the next.
struct gate {
  std::mutex mu;
  std::condition_variable cv;
  int reached = 0, released = 0;
  void stop() {
    std::unique_lock lk(mu);
    const int n = ++reached;
    cv.notify_all();
    cv.wait_for(lk, 60s, [&] { return released >= n; });
  }
  bool wait(int n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, 60s, [&] { return reached >= n; });
  }
  void release() {
    {
      std::lock_guard lk(mu);
      ++released;
    }
    cv.notify_all();
  }
};

// Queues an update to w as version v while the engine waits at the gate; its result (once the
// swap happened) in the future.
std::future<serve::weights_result> update_at_gate(serve::completion_backend& eng, gate& g, int n,
                                                  const weights_ptr& w, uint64_t v,
                                                  serve::weights_done also = {}) {
  REQUIRE(g.wait(n));
  auto done = std::make_shared<std::promise<serve::weights_result>>();
  auto result = done->get_future();
  eng.update_weights_async(w, v, [done, also](const serve::weights_result& r) {
    if (also) also(r);
    done->set_value(r);
  });
  g.release();
  return result;
}

}  // namespace

TEST_CASE("weights: a request running across a swap goes on as the new weights decode it") {
  collector c;
  auto eng = actors::make_engine(test_weights(), gpt2_tok(), {});
  const auto prompt = long_prompt();
  const int N = 20, K = 6;
  const weights_ptr v1 = shared_weights(7);
  gate g;
  auto sink = [&g, inner = c.sink(), seen = 0](const serve::completion_event& e) mutable {
    inner(e);
    seen += static_cast<int>(e.tokens.size());
    if (seen == K && !e.tokens.empty()) g.stop();
  };
  auto s = eng->submit(greedy(prompt, N), sink);
  REQUIRE(s.status == 200);
  CHECK(update_at_gate(*eng, g, 1, v1, 1).get().status == 200);
  REQUIRE(c.wait({{s.id, 1}}));
  const auto got = c.by_id[s.id].tokens[0];
  const auto versions = c.by_id[s.id].versions[0];
  REQUIRE(got.size() == static_cast<std::size_t>(N));
  for (int i = 0; i < N; ++i) CHECK(versions[i] == (i < K ? 0u : 1u));
  // The first K tokens are the old weights' greedy ones; the rest are what the new weights
  // decode after prompt + those K (recomputed, not read from the old K/V).
  CHECK(std::vector<int>(got.begin(), got.begin() + K) ==
        fresh_greedy(shared_weights(5), {prompt}, {K})[0]);
  auto prefix = prompt;
  prefix.insert(prefix.end(), got.begin(), got.begin() + K);
  CHECK(std::vector<int>(got.begin() + K, got.end()) == fresh_greedy(v1, {prefix}, {N - K})[0]);
  CHECK(metric(eng->metrics_text(), "zeroflow_preemptions_total") >= 1);
}

namespace {

// The tokens each choice of the requests `ids` (prompts, n tokens each) got from version v equal
// what a fresh engine on w decodes after the prompt and the choice's tokens before them.
void check_stretch(collector& c, const std::vector<std::pair<uint64_t, int>>& ids,
                   const std::vector<std::vector<int>>& prompts, int n, uint64_t v,
                   const weights_ptr& w) {
  CAPTURE(v);
  std::vector<std::vector<int>> refs, want;
  std::vector<int> lens;
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (int k = 0; k < ids[i].second; ++k) {
      const auto& out = c.by_id[ids[i].first];
      const auto& toks = out.tokens.at(k);
      const auto& vers = out.versions.at(k);
      REQUIRE(toks.size() == static_cast<std::size_t>(n));
      CHECK(std::is_sorted(vers.begin(), vers.end()));
      const auto from = std::find(vers.begin(), vers.end(), v) - vers.begin();
      const auto to = std::upper_bound(vers.begin(), vers.end(), v) - vers.begin();
      if (from >= to) continue;
      auto prefix = prompts[i];
      prefix.insert(prefix.end(), toks.begin(), toks.begin() + from);
      refs.push_back(prefix);
      lens.push_back(static_cast<int>(to - from));
      want.emplace_back(toks.begin() + from, toks.begin() + to);
    }
  CHECK_FALSE(want.empty());  // every version made tokens: the swaps came mid-generation
  const auto got = fresh_greedy(w, refs, lens);
  for (std::size_t j = 0; j < want.size(); ++j) CHECK(got[j] == want[j]);
}

}  // namespace

TEST_CASE("weights: versions pushed under concurrent streams never mix within a step") {
  // One log of every token event and every swap, in the engine thread's order.
  struct entry {
    bool swap = false;
    uint64_t version = 0;
  };
  std::mutex log_mu;
  std::vector<entry> log;
  collector c;
  engine_config o;
  o.token_budget = 48;  // prompts split across steps: swaps land mid-prefill too
  o.max_seqs = 16;
  auto eng = actors::make_engine(test_weights(), gpt2_tok(), o);
  // The engine stops at the 60th, 240th and 420th token event (of 18 x 40) for the next swap.
  gate g;
  int token_events = 0;
  auto logged = [&](serve::event_sink inner) {
    return [&, inner](const serve::completion_event& e) {
      // Logged before the collector sees the event: the last choice's final event is what lets
      // c.wait() return, and the main thread then reads the log without the engine thread
      // still appending to it.
      int n = 0;
      if (!e.tokens.empty()) {
        std::lock_guard lk(log_mu);
        log.push_back({false, e.weights_version});
        n = ++token_events;
      }
      inner(e);
      if (n == 60 || n == 240 || n == 420) g.stop();
    };
  };
  std::mt19937 rng(3);
  std::vector<std::vector<int>> prompts;
  std::vector<std::pair<uint64_t, int>> ids;
  const int N = 40;
  for (int i = 0; i < 14; ++i) {
    std::vector<int> p(5 + rng() % 60);
    for (auto& t : p) t = static_cast<int>(rng() % 50257);
    auto r = greedy(p, N);
    r.n = i % 4 == 0 ? 2 : 1;
    auto s = eng->submit(r, logged(c.sink()));
    REQUIRE(s.status == 200);
    prompts.push_back(p);
    ids.push_back({s.id, r.n});
  }
  const std::vector<weights_ptr> versions = {shared_weights(5), shared_weights(7),
                                             shared_weights(8), shared_weights(9)};
  for (uint64_t v = 1; v <= 3; ++v) {
    auto swapped = update_at_gate(*eng, g, static_cast<int>(v), versions[v], v,
                                  [&](const serve::weights_result& r) {
                                    std::lock_guard lk(log_mu);
                                    log.push_back({true, r.version});
                                  });
    CHECK(swapped.get().status == 200);
  }
  REQUIRE(c.wait(ids));
  // Each token's version is the last swap's before it: no step after a swap used the old
  // weights, none before it the new ones, and the sequence never goes back.
  uint64_t served = 0;
  int swaps = 0;
  for (const entry& e : log) {
    if (e.swap) {
      CHECK(e.version == served + 1);
      served = e.version;
      ++swaps;
    } else {
      CHECK(e.version == served);
    }
  }
  CHECK(swaps == 3);
  CHECK(served == 3);
  // Every choice finished, and each stretch of it under version v equals what a fresh engine on
  // v decodes after the prompt and the tokens before the stretch.
  for (uint64_t v = 0; v <= 3; ++v) check_stretch(c, ids, prompts, N, v, versions[v]);
  const std::string m = eng->metrics_text();
  CHECK(metric(m, "zeroflow_weight_updates_total") == 3);
  CHECK(metric(m, "zeroflow_kv_blocks_used") == 0);
}

TEST_CASE("weights: another shape is refused with a message and serving goes on") {
  collector c;
  auto eng = actors::make_engine(test_weights(), gpt2_tok(), {});
  const auto prompt = long_prompt();
  const auto before = run_greedy(*eng, c, prompt, 8);
  auto other = [](auto edit) {
    model_config m = test_config();
    edit(m);
    return std::make_shared<const lm_weights>(lm_weights_of(m, test_params(3, m).data(), "o"));
  };
  CHECK(error_of([&] { eng->update_weights(1, other([](model_config& m) { m.n_layer = 3; })); }) ==
        "weights of another shape: n_layer is 3 but the served model's is 2");
  CHECK(contains(
      error_of([&] { eng->update_weights(1, other([](model_config& m) { m.n_embd = 32; })); }),
      "hidden is 32 but the served model's is 64"));
  CHECK(contains(error_of([&] {
                   eng->update_weights(1, other([](model_config& m) { m.n_positions = 128; }));
                 }),
                 "max_positions is 128 but the served model's is 256"));
  CHECK(error_of([&] { eng->update_weights(1, nullptr); }) == "no weights given");
  std::promise<serve::weights_result> r;
  eng->update_weights_from_disk("/nonexistent/zf-weights", 1,
                                [&](const serve::weights_result& x) { r.set_value(x); });
  const auto disk = r.get_future().get();
  CHECK(disk.status == 400);
  CHECK(contains(disk.message, "/nonexistent/zf-weights: no such folder"));
  CHECK(disk.version == 0);
  CHECK(eng->weights_version() == 0);
  CHECK(run_greedy(*eng, c, prompt, 8) == before);
  CHECK(metric(eng->metrics_text(), "zeroflow_weight_updates_total") == 0);
}

namespace {

// A zeroflow checkpoint of the test GPT-2 with init seed `seed` under root; its step folder.
std::filesystem::path write_checkpoint(const std::filesystem::path& root, uint64_t seed,
                                       int n_layer = 2) {
  run_config rc;
  rc.model = test_config();
  rc.model.n_layer = n_layer;
  const auto layout = layout_of(rc.model);
  const std::vector<float> p = test_params(seed, rc.model);
  storage::checkpoint_view v;
  v.config_toml = to_toml(rc);
  v.layout = &layout;
  v.params = p.data();
  return storage::save_checkpoint(root, v);
}

struct served {
  std::unique_ptr<serve::completion_backend> engine;
  std::optional<actors::gateway> gw;
  explicit served(std::unique_ptr<serve::completion_backend> e) : engine(std::move(e)) {
    actors::gateway_options o;
    o.port = 0;
    gw.emplace(*engine, o);
  }
  json complete(const std::string& prompt, bool stream = false) {
    client c(gw->port());
    auto res = c.post("/v1/completions", {{"prompt", prompt},
                                          {"max_tokens", 10},
                                          {"temperature", 0},
                                          {"ignore_eos", true},
                                          {"stream", stream}});
    REQUIRE(res.result_int() == 200);
    if (!stream) return json::parse(res.body());
    json chunks = json::array();
    for (const json& e : sse_events(res.body()))
      if (e.is_object()) chunks.push_back(e);
    return chunks;
  }
};

}  // namespace

TEST_CASE("weights: POST /v1/update_weights_from_disk swaps in checkpoints and HF folders") {
  temp_dir d("weights_http");
  const auto ckpt = write_checkpoint(d / "run-b" / "checkpoints", 7);
  std::filesystem::create_directories(d / "hf");
  storage::export_safetensors(write_checkpoint(d / "run-c" / "checkpoints", 9),
                              d / "hf" / "model.safetensors");
  write_checkpoint(d / "run-wide" / "checkpoints", 3, 3);
  const std::string prompt = "Call me Ishmael. Some years ago";

  served s(actors::make_engine(test_weights(), gpt2_tok(), {}));
  const json first = s.complete(prompt);
  CHECK(first["system_fingerprint"] == "zf-0");
  client c(s.gw->port());
  auto update = [&](const json& body) { return c.post("/v1/update_weights_from_disk", body); };

  // A run folder; no version: 1.
  auto r1 = update({{"path", (d / "run-b").string()}});
  REQUIRE_MESSAGE(r1.result_int() == 200, r1.body());
  const json b1 = json::parse(r1.body());
  CHECK(b1["success"] == true);
  CHECK(b1["version"] == 1);
  CHECK(contains(b1["message"].get<std::string>(), "as weights version 1"));
  const json after1 = s.complete(prompt);
  CHECK(after1["system_fingerprint"] == "zf-1");
  served fresh1(actors::make_engine(storage::load_lm_weights(ckpt), gpt2_tok(), {}));
  CHECK(after1["choices"][0]["text"] == fresh1.complete(prompt)["choices"][0]["text"]);
  CHECK(after1["choices"][0]["text"] != first["choices"][0]["text"]);

  // A Hugging Face folder, version given (SGLang's "model_path").
  auto r2 = update({{"model_path", (d / "hf").string()}, {"version", 7}});
  REQUIRE_MESSAGE(r2.result_int() == 200, r2.body());
  CHECK(json::parse(r2.body())["version"] == 7);
  const json chunks = s.complete(prompt, true);
  REQUIRE(chunks.size() >= 2);
  std::string streamed;
  for (const json& ch : chunks) {
    CHECK(ch["system_fingerprint"] == "zf-7");
    streamed += ch["choices"][0]["text"].get<std::string>();
  }
  served fresh2(actors::make_engine(storage::load_lm_weights(d / "hf"), gpt2_tok(), {}));
  const std::string want = fresh2.complete(prompt)["choices"][0]["text"];
  CHECK(streamed == want);

  // Refusals: 400 with an OpenAI error body naming the problem; version 7 serves on.
  struct bad {
    json body;
    std::string message;
  };
  for (const bad& b : std::vector<bad>{
           {{{"path", (d / "missing").string()}}, "no such folder"},
           {{{"path", (d / "run-wide").string()}}, "n_layer is 3 but the served model's is 2"},
           {{{"path", (d / "hf").string()}, {"version", 7}}, "not newer than the served version 7"},
           {{{"version", 9}}, "'path' is required"},
           {{{"path", 5}}, "'path' must be a string"},
           {{{"path", "x"}, {"version", -1}}, "'version' must be a non-negative integer"}}) {
    auto r = update(b.body);
    CAPTURE(r.body());
    CHECK(r.result_int() == 400);
    const json e = json::parse(r.body());
    CHECK(e["error"]["type"] == "invalid_request_error");
    CHECK(contains(e["error"]["message"].get<std::string>(), b.message));
  }
  CHECK(c.request(http::verb::post, "/v1/update_weights_from_disk", "{\"path\":").result_int() ==
        400);
  const json still = s.complete(prompt);
  CHECK(still["system_fingerprint"] == "zf-7");
  CHECK(still["choices"][0]["text"] == want);
  const std::string m = client(s.gw->port()).get("/metrics").body();
  CHECK(contains(m, "zeroflow_weights_version{model=\"test-gpt2\"} 7"));
  CHECK(contains(m, "zeroflow_weight_updates_total{model=\"test-gpt2\"} 2"));
  CHECK(contains(m, "route=\"/v1/update_weights_from_disk\",code=\"400\"} 7"));
}

TEST_CASE("weights: the endpoint needs loopback or --enable-weight-updates") {
  fake_backend backend;
  auto answer = [&](const std::string& host, bool enable) {
    actors::gateway_options o;
    o.host = host;
    o.port = 0;
    o.enable_weight_updates = enable;
    actors::gateway gw(backend, o);
    return client(gw.port()).post("/v1/update_weights_from_disk", {{"path", "/tmp"}});
  };
  auto off = answer("0.0.0.0", false);
  CHECK(off.result_int() == 403);
  CHECK(contains(off.body(), "--enable-weight-updates"));
  // Allowed: the backend answers (this one cannot update: 501).
  auto on = answer("0.0.0.0", true);
  CHECK(on.result_int() == 501);
  CHECK(contains(on.body(), "this backend cannot update its weights"));
  CHECK(answer("127.0.0.1", false).result_int() == 501);
}

TEST_CASE("weights: system_fingerprint names the version of each choice's last token") {
  auto event = [](int index, uint64_t version, bool token, serve::finish_reason f) {
    serve::completion_event e;
    e.index = index;
    e.text = token ? "x" : "";
    if (token) e.tokens = {1};
    e.finish = f;
    e.weights_version = version;
    return e;
  };
  using serve::finish_reason;
  for (auto kind : {openai::endpoint::completions, openai::endpoint::chat}) {
    CAPTURE(static_cast<int>(kind));
    openai::request r;
    r.kind = kind;
    r.completion.prompt = {1, 2};
    r.completion.n = 2;
    openai::response_writer body(r, "m", "id", 1);
    body.on_event(event(0, 3, true, finish_reason::none));
    body.on_event(event(1, 3, true, finish_reason::none));
    body.on_event(event(0, 4, true, finish_reason::length));
    body.on_event(event(1, 5, false, finish_reason::cancelled));      // no token: stays 3
    CHECK(json::parse(body.body())["system_fingerprint"] == "zf-4");  // the newest choice

    r.stream = true;
    r.include_usage = true;
    openai::response_writer stream(r, "m", "id", 1);
    std::string text = stream.on_event(event(0, 0, true, finish_reason::none));
    text += stream.on_event(event(1, 1, true, finish_reason::none));
    text += stream.on_event(event(0, 1, true, finish_reason::stop));
    text += stream.on_event(event(1, 2, false, finish_reason::stop));
    text += stream.stream_tail();
    std::vector<std::string> prints;
    for (const json& e : sse_events(text))
      if (e.is_object()) prints.push_back(e["system_fingerprint"]);
    const std::vector<std::string> want =
        kind == openai::endpoint::chat
            ? std::vector<std::string>{"zf-0", "zf-0", "zf-1", "zf-1",
                                       "zf-1", "zf-1", "zf-1", "zf-1"}
            : std::vector<std::string>{"zf-0", "zf-1", "zf-1", "zf-1", "zf-1"};
    CHECK(prints == want);
  }
  CHECK(openai::system_fingerprint(0) == "zf-0");
  const json ok = json::parse(openai::weights_update_body({200, 12, "loaded"}));
  CHECK(ok == json{{"success", true}, {"version", 12}, {"message", "loaded"}});
  CHECK(openai::weights_update_error({503, 0, "down"}).type == "server_error");
}
