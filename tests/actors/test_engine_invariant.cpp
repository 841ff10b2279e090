// One forward, bit for bit: under engine.batch_invariant, the engine's log-probs of 32
// concurrent requests (mixed prompt lengths, shared prefixes, a small token budget and a pool
// that forces preemption) equal `zeroflow score`'s (runtime/model/score in the same mode) bit for
// bit, and its greedy tokens equal each request decoded alone.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "actors/engine.hpp"
#include "engine_helpers.hpp"
#include "kernels/dispatch.hpp"
#include "runtime/model/score.hpp"

using namespace zf;
using namespace zf::testing;

TEST_CASE("engine: batch-invariant log-probs equal score mode's bits, greedy equals alone") {
  std::mt19937 g(7);
  std::vector<serve::completion_request> reqs;
  std::vector<int> system(40);
  for (auto& x : system) x = static_cast<int>(g() % 50257);
  for (int i = 0; i < 32; ++i) {
    const int len = i % 4 == 0 ? 60 + static_cast<int>(g() % 60) : 1 + static_cast<int>(g() % 30);
    std::vector<int> p(len);
    for (auto& x : p) x = static_cast<int>(g() % 50257);
    if (i % 3 == 1) p.insert(p.begin(), system.begin(), system.end());
    reqs.push_back(greedy(std::move(p), 4 + static_cast<int>(g() % 16)));
    reqs.back().sampling.logprobs = 0;
  }
  reqs[31].prompt = reqs[4].prompt;  // an exact repeat: served from the prefix cache
  auto run = [&](engine_config o, bool one_at_a_time) {
    o.batch_invariant = true;
    collector c;
    auto eng = actors::make_engine(test_weights(), gpt2_tok(), o);
    const auto ids = run_all(*eng, reqs, c, one_at_a_time);
    std::vector<std::pair<std::vector<int>, std::vector<float>>> out;
    for (auto id : ids) {
      std::vector<float> lp;
      for (auto& p : c.by_id[id].logprobs[0]) lp.push_back(p.chosen.logprob);
      CHECK_FALSE(c.by_id[id].misaligned);
      out.push_back({c.by_id[id].tokens[0], lp});
    }
    MESSAGE("preemptions " << metric(eng->metrics_text(), "zeroflow_preemptions_total")
                           << ", prefix cache hits "
                           << metric(eng->metrics_text(), "zeroflow_prefix_cache_hits_total"));
    return out;
  };
  engine_config alone;
  alone.max_seqs = 1;
  alone.prefix_caching = false;
  const auto ref = run(alone, true);
  engine_config sf;  // prompts split over steps, a pool that forces preemption
  sf.token_budget = 24;
  sf.max_seqs = 12;
  sf.block_size = 8;
  sf.kv_blocks = 30;
  sf.threads = 3;  // rows' attention and the invariant GEMM's columns split over 3 threads
  const auto got = run(sf, false);

  // score mode on prompt + generated tokens, in the same mode, batched with padding
  transformer model(spec_of(test_config()), true, false);
  const auto flat = test_params();
  std::copy(flat.begin(), flat.end(), model.params().data());
  kernels::batch_invariant_scope on(true);
  std::vector<score_item> items;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    score_item it{reqs[i].prompt, static_cast<int>(reqs[i].prompt.size())};
    it.ids.insert(it.ids.end(), ref[i].first.begin(), ref[i].first.end());
    items.push_back(std::move(it));
  }
  scorer sc(model, 256, 4);
  const auto scored = sc.score(items);
  int bits_equal = 0, total = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i].first == ref[i].first);  // greedy under batching == alone
    REQUIRE(got[i].second.size() == ref[i].first.size());
    REQUIRE(scored[i].logprobs.size() == ref[i].first.size());
    for (std::size_t t = 0; t < ref[i].first.size(); ++t, ++total) {
      const bool same_a = std::memcmp(&got[i].second[t], &scored[i].logprobs[t], 4) == 0;
      const bool same_b = std::memcmp(&ref[i].second[t], &scored[i].logprobs[t], 4) == 0;
      bits_equal += same_a && same_b;
    }
  }
  MESSAGE(bits_equal << " of " << total
                     << " log-probs bit-identical across batched, alone and score");
  CHECK(bits_equal == total);
}
