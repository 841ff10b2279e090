#pragma once
// Shared by the engine tests (test_engine, test_weight_update): a small seeded GPT-2 served with
// the GPT-2 tokenizer, an event collector, greedy requests and reading /metrics figures.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"
#include "runtime/serve/serving.hpp"
#include "runtime/text/tokenizer.hpp"

namespace zf::testing {

using namespace std::chrono_literals;

inline model_config test_config() {
  model_config m;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = 256;
  return m;
}

// seed 5: the weights every engine test serves; others: other weights (of shape m).
inline std::vector<float> test_params(uint64_t seed = 5, const model_config& m = test_config()) {
  auto L = layout_of(m);
  std::vector<float> p(L.total);
  init_params(L, m.n_layer, seed, p.data());
  for (auto& x : p) x *= 4.0f;  // spread the logits: greedy ties would make the test moot
  return p;
}

inline lm_weights test_weights(uint64_t seed = 5) {
  return lm_weights_of(test_config(), test_params(seed).data(), "test-gpt2");
}

inline const tokenizer& gpt2_tok() {
  static tokenizer t = tokenizer::load_gpt2(std::filesystem::path(ZF_DATA_DIR) / "gpt2");
  return t;
}

// Collects events of many requests; wait() until every request has its n final events.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  struct out {
    std::map<int, std::vector<int>> tokens;
    std::map<int, std::vector<uint64_t>> versions;  // parallel to tokens: weights_version
    std::map<int, std::vector<serve::position_logprobs>> logprobs;
    bool misaligned = false;  // an event whose logprobs were not parallel to its tokens
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
      o.versions[e.index].insert(o.versions[e.index].end(), e.tokens.size(), e.weights_version);
      auto& lp = o.logprobs[e.index];
      lp.insert(lp.end(), e.logprobs.begin(), e.logprobs.end());
      if (!e.logprobs.empty() && e.logprobs.size() != e.tokens.size()) o.misaligned = true;
      for (std::size_t i = 0; i < e.logprobs.size() && i < e.tokens.size(); ++i)
        if (e.logprobs[i].chosen.token != e.tokens[i]) o.misaligned = true;
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

// Submits every request to eng (one_at_a_time: each waits for the previous to finish) and
// waits until all have finished; returns their ids in order.
inline std::vector<uint64_t> run_all(serve::completion_backend& eng,
                                     const std::vector<serve::completion_request>& reqs,
                                     collector& c, bool one_at_a_time) {
  std::vector<uint64_t> ids;
  for (auto& r : reqs) {
    auto s = eng.submit(r, c.sink());
    REQUIRE(s.status == 200);
    ids.push_back(s.id);
    if (one_at_a_time) REQUIRE(c.wait({{s.id, 1}}));
  }
  std::vector<std::pair<uint64_t, int>> all;
  for (auto id : ids) all.push_back({id, 1});
  REQUIRE(c.wait(all));
  return ids;
}

inline serve::completion_request greedy(std::vector<int> prompt, int max_tokens) {
  serve::completion_request r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  return r;
}

inline double metric(const std::string& text, const std::string& name) {
  auto p = text.find("\n" + name);
  REQUIRE(p != std::string::npos);
  p = text.find(' ', p + 1);
  return std::stod(text.substr(p + 1, text.find('\n', p + 1) - p - 1));
}

}  // namespace zf::testing
