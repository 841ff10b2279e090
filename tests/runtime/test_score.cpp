// Batched scoring (runtime/model/score): an item's log-probs do not depend on the items beside it or
// on padding, equal the single-sequence score mode, and perplexity windows score every token once.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "runtime/core/error.hpp"
#include "runtime/model/score.hpp"

using namespace zf;

namespace {

model_spec tiny_llama() {
  model_config m;
  m.arch = "llama";
  m.n_layer = 2;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.n_embd = 32;
  m.n_positions = 48;
  m.vocab_size = 61;
  return spec_of(m);
}

std::vector<int> ids_of(int n, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int> v(n);
  for (auto& x : v) x = int(g() % 61);
  return v;
}

}  // namespace

TEST_CASE("score: an item scores the same alone and in any batch, as the model's score mode") {
  transformer model(tiny_llama(), true, false);
  model.init_weights(3);
  std::vector<score_item> items;
  for (int i = 0; i < 7; ++i) items.push_back({ids_of(5 + 6 * i, 10 + i), 1 + i % 3});
  scorer batched(model, 48, 3);
  const auto all = batched.score(items);
  for (std::size_t i = 0; i < items.size(); ++i) {
    CAPTURE(i);
    scorer alone(model, 48, 1);
    const auto one = alone.score({items[i]});
    REQUIRE(one[0].logprobs.size() == items[i].ids.size() - items[i].first);
    CHECK(one[0].logprobs == all[i].logprobs);
    // the score mode on the unpadded sequence alone: the same numbers
    const int n = int(items[i].ids.size());
    std::vector<int> tg(n, -1);
    for (int p = items[i].first - 1; p + 1 < n; ++p) tg[p] = items[i].ids[p + 1];
    std::vector<float> lp(n);
    model.score(items[i].ids.data(), tg.data(), 1, n, lp.data());
    for (int p = items[i].first - 1; p + 1 < n; ++p)
      CHECK(lp[p] == doctest::Approx(all[i].logprobs[p - (items[i].first - 1)]).epsilon(1e-6));
  }
  // bad items are named
  CHECK_THROWS_WITH_AS(batched.score({{{1}, 1}}), doctest::Contains("item 1 has 1 tokens"),
                       zf::error);
  CHECK_THROWS_WITH_AS(batched.score({{ids_of(49, 1), 1}}), doctest::Contains("more than"),
                       zf::error);
  CHECK_THROWS_WITH_AS(batched.score({{{1, 99}, 1}}), doctest::Contains("token id 99"), zf::error);
}

TEST_CASE("score: perplexity windows score each token once") {
  transformer model(tiny_llama(), true, false);
  model.init_weights(4);
  const auto ids = ids_of(100, 7);
  // one window covering everything = the plain mean over tokens 1..99
  const auto whole = perplexity(model, std::vector<int>(ids.begin(), ids.begin() + 40), 48, 48);
  CHECK(whole.tokens == 39);
  scorer sc(model, 48, 1);
  const auto r = sc.score({{std::vector<int>(ids.begin(), ids.begin() + 40), 1}});
  CHECK(whole.nll_sum == doctest::Approx(-r[0].sum));
  // overlapping windows: every token after the first scored exactly once
  CHECK(perplexity(model, ids, 16, 4).tokens == 99);
  // disjoint windows skip each window's first token (no context)
  CHECK(perplexity(model, ids, 20, 20).tokens == 95);
  CHECK(perplexity(model, ids, 16, 4).ppl() > 1.0);
}
