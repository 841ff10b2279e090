// The serving engine end to end (make_engine: CAF actor + engine_core + lm_runner + scheduler)
// on a small seeded GPT-2 with the GPT-2 tokenizer: batching never changes greedy tokens;
// n, stop strings, max_tokens, cancellation, validation, back-pressure and metrics.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "actors/engine.hpp"
#include "runtime/config.hpp"
#include "runtime/model.hpp"

using namespace zf;
using namespace std::chrono_literals;

namespace {

lm_weights test_weights() {
  model_config m;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = 256;
  auto L = gpt2_layout(m);
  std::vector<float> p(L.total);
  init_gpt2_params(L, m.n_layer, 5, p.data());
  for (auto& x : p) x *= 4.0f;  // spread the logits: greedy ties would make the test moot
  return gpt2_lm_weights(m, p.data(), "test-gpt2");
}

const tokenizer& gpt2_tok() {
  static tokenizer t = tokenizer::load_gpt2(std::filesystem::path(ZF_DATA_DIR) / "gpt2");
  return t;
}

// Collects events of many requests; wait() until every request has its n final events.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  struct out {
    std::map<int, std::vector<int>> tokens;
    std::map<int, std::string> text;
    std::map<int, serve::finish_reason> finish;
    std::map<int, serve::completion_event> last;
    int n = 1, finals = 0;
  };
  std::map<uint64_t, out> by_id;
  int events = 0;
  serve::event_sink sink() {
    return [this](const serve::completion_event& e) {
      std::lock_guard lk(mu);
      auto& o = by_id[e.request_id];
      auto& t = o.tokens[e.index];
      t.insert(t.end(), e.tokens.begin(), e.tokens.end());
      o.text[e.index] += e.text;
      ++events;
      if (e.finish != serve::finish_reason::none) {
        o.finish[e.index] = e.finish;
        o.last[e.index] = e;
        ++o.finals;
      }
      cv.notify_all();
    };
  }
  bool wait(const std::vector<std::pair<uint64_t, int>>& ids, std::chrono::seconds limit = 120s) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, limit, [&] {
      for (auto [id, n] : ids)
        if (by_id[id].finals < n) return false;
      return true;
    });
  }
};

serve::completion_request greedy(std::vector<int> prompt, int max_tokens) {
  serve::completion_request r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  return r;
}

double metric(const std::string& text, const std::string& name) {
  auto p = text.find("\n" + name);
  REQUIRE(p != std::string::npos);
  p = text.find(' ', p + 1);
  return std::stod(text.substr(p + 1, text.find('\n', p + 1) - p - 1));
}

}  // namespace

TEST_CASE("engine: greedy tokens of 32 concurrent requests equal each request decoded alone") {
  std::mt19937 g(42);
  std::vector<serve::completion_request> reqs;
  for (int i = 0; i < 32; ++i) {
    const int len = i % 4 == 0 ? 90 + static_cast<int>(g() % 60) : 1 + static_cast<int>(g() % 40);
    std::vector<int> p(len);
    for (auto& x : p) x = static_cast<int>(g() % 50257);
    reqs.push_back(greedy(std::move(p), 4 + static_cast<int>(g() % 20)));
  }
  auto run = [&](actors::engine_options o, bool one_at_a_time) {
    collector c;  // before the engine: its destructor still calls sinks (cancelled)
    auto eng = actors::make_engine(test_weights(), gpt2_tok(), o);
    std::vector<std::vector<int>> out;
    std::vector<uint64_t> ids;
    for (auto& r : reqs) {
      auto s = eng->submit(r, c.sink());
      REQUIRE(s.status == 200);
      ids.push_back(s.id);
      if (one_at_a_time) REQUIRE(c.wait({{s.id, 1}}));
    }
    REQUIRE(c.wait([&] {
      std::vector<std::pair<uint64_t, int>> v;
      for (auto id : ids) v.push_back({id, 1});
      return v;
    }()));
    for (auto id : ids) out.push_back(c.by_id[id].tokens[0]);
    const auto m = eng->metrics_text();
    CHECK(metric(m, "zeroflow_kv_blocks_used") == 0);
    return std::pair{out, m};
  };
  actors::engine_options alone;
  alone.token_budget = 256;
  alone.max_seqs = 1;
  auto [ref, m0] = run(alone, true);
  for (std::size_t i = 0; i < reqs.size(); ++i)
    REQUIRE(ref[i].size() == static_cast<std::size_t>(reqs[i].max_tokens));

  actors::engine_options sf;  // SplitFuse: small budget (prompts split), few blocks (preemption)
  sf.token_budget = 32;
  sf.max_seqs = 12;
  sf.block_size = 8;
  sf.num_blocks = 60;
  auto [got, m1] = run(sf, false);
  for (std::size_t i = 0; i < reqs.size(); ++i) CHECK_MESSAGE(got[i] == ref[i], "request " << i);
  MESSAGE("split_fuse steps " << metric(m1, "zeroflow_engine_steps_total") << ", preemptions "
                              << metric(m1, "zeroflow_preemptions_total"));

  actors::engine_options st = sf;
  st.policy = actors::engine_options::policy_kind::static_batch;
  st.num_blocks = 0;
  auto [got2, m2] = run(st, false);
  for (std::size_t i = 0; i < reqs.size(); ++i) CHECK_MESSAGE(got2[i] == ref[i], "request " << i);
}

TEST_CASE("engine: n choices, stop strings, max_tokens and usage") {
  actors::engine_options o;
  collector c;  // before the engine: its destructor still calls sinks (cancelled)
  auto eng = actors::make_engine(test_weights(), gpt2_tok(), o);
  auto prompt = gpt2_tok().encode("The whale swam towards the ship");
  // Greedy reference text, then a stop string from its middle.
  auto s0 = eng->submit(greedy(prompt, 24), c.sink());
  REQUIRE(c.wait({{s0.id, 1}}));
  const std::string full = c.by_id[s0.id].text[0];
  CHECK(c.by_id[s0.id].finish[0] == serve::finish_reason::length);
  CHECK(c.by_id[s0.id].last[0].completion_tokens == 24);
  CHECK(c.by_id[s0.id].last[0].prompt_tokens == static_cast<int>(prompt.size()));
  REQUIRE(full.size() > 12);
  const std::string stop = full.substr(full.size() / 2, 3);
  auto r = greedy(prompt, 24);
  r.stop = {"\x01never", stop};
  auto s1 = eng->submit(r, c.sink());
  REQUIRE(c.wait({{s1.id, 1}}));
  CHECK(c.by_id[s1.id].finish[0] == serve::finish_reason::stop);
  CHECK(c.by_id[s1.id].text[0] == full.substr(0, full.find(stop)));

  // n = 3 sampled choices share the prompt: three finals, indices 0..2, seeded and distinct.
  serve::completion_request rn;
  rn.prompt = prompt;
  rn.max_tokens = 12;
  rn.n = 3;
  rn.sampling.temperature = 1.0f;
  rn.sampling.seed = 7;
  rn.ignore_eos = true;
  auto s2 = eng->submit(rn, c.sink());
  REQUIRE(c.wait({{s2.id, 3}}));
  auto& out = c.by_id[s2.id];
  REQUIRE(out.tokens.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(out.tokens[i].size() == 12);
  CHECK((out.tokens[0] != out.tokens[1] || out.tokens[1] != out.tokens[2]));
  // the same seed again gives the same three choices
  auto s3 = eng->submit(rn, c.sink());
  REQUIRE(c.wait({{s3.id, 3}}));
  for (int i = 0; i < 3; ++i) CHECK(c.by_id[s3.id].tokens[i] == out.tokens[i]);
  CHECK(metric(eng->metrics_text(), "zeroflow_kv_blocks_used") == 0);
}

TEST_CASE("engine: cancel frees the sequence at once and bad requests are refused") {
  actors::engine_options o;
  o.max_queue = 2;
  o.max_seqs = 2;
  collector c;  // before the engine: its destructor still calls sinks (cancelled)
  auto eng = actors::make_engine(test_weights(), gpt2_tok(), o);
  auto s = eng->submit(greedy(std::vector<int>(10, 5), 200), c.sink());
  REQUIRE(s.status == 200);
  {
    std::unique_lock lk(c.mu);
    REQUIRE(c.cv.wait_for(lk, 30s, [&] { return c.events > 0; }));
  }
  eng->cancel(s.id);
  REQUIRE(c.wait({{s.id, 1}}));
  CHECK(c.by_id[s.id].finish[0] == serve::finish_reason::cancelled);
  CHECK(c.by_id[s.id].tokens[0].size() < 200);
  CHECK(metric(eng->metrics_text(), "zeroflow_kv_blocks_used") == 0);

  auto bad = eng->submit(greedy(std::vector<int>(250, 5), 10), c.sink());
  CHECK(bad.status == 400);
  CHECK(bad.message.find("maximum context length is 256") != std::string::npos);
  CHECK(eng->submit(greedy({1, 2}, 0), c.sink()).status == 400);
  CHECK(eng->submit(greedy({1, 60000}, 3), c.sink()).status == 400);
  CHECK(eng->submit(greedy({}, 3), c.sink()).status == 400);

  // back-pressure: max_queue + max_seqs = 4 in flight, the rest get 429 with Retry-After
  std::vector<uint64_t> ok;
  int busy = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = eng->submit(greedy(std::vector<int>(8, 3), 100), c.sink());
    if (r.status == 200) ok.push_back(r.id);
    if (r.status == 429) {
      ++busy;
      CHECK(r.retry_after_s >= 1);
    }
  }
  CHECK(ok.size() == 4);
  CHECK(busy == 6);
  for (auto id : ok) eng->cancel(id);
  std::vector<std::pair<uint64_t, int>> w;
  for (auto id : ok) w.push_back({id, 1});
  REQUIRE(c.wait(w));
  CHECK(eng->submit(greedy({1, 2}, 2), c.sink()).status == 200);
}
