// The serving forward (paged_model over paged KV) against the training forward (transformer,
// itself equal to the PyTorch twin), and against itself under different chunkings and batch
// mixes: chunked prefill == whole prefill; a ragged batch == each sequence alone.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/model/model.hpp"
#include "test_util.hpp"

using namespace zf;

using zf::testing::rel_diff;

namespace {

model_config small_cfg() {
  model_config m;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = 96;
  m.vocab_size = 211;
  return m;
}

std::vector<float> seeded_params(const model_config& m, uint64_t seed) {
  auto L = layout_of(m);
  std::vector<float> p(L.total);
  init_params(L, m.n_layer, seed, p.data());
  for (auto& x : p) x *= 4.0f;  // spread the logits so argmax comparisons are meaningful
  return p;
}

std::vector<int> ids_of(int n, int vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int> v(n);
  for (auto& x : v) x = static_cast<int>(g() % vocab);
  return v;
}

// A block table of pool blocks, deliberately out of order.
std::vector<int> table(int first, int n, int stride) {
  std::vector<int> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + ((n - 1 - i) * stride);
  return t;
}

}  // namespace

TEST_CASE("lm: token-by-token paged decoding equals the training forward, row by row") {
  auto m = small_cfg();
  auto flat = seeded_params(m, 7);
  transformer ref(m);
  std::copy(flat.begin(), flat.end(), ref.params().data());
  const int T = 40;
  auto ids = ids_of(T, m.vocab_size, 1);
  ref.forward(ids.data(), nullptr, 1, T);
  auto w = lm_weights_of(m, flat.data(), "t");
  paged_model run(w, 64, 4);
  kv_storage kv(m.n_layer, 32, 4, m.n_embd);
  auto blocks = table(3, 10, 2);
  for (int t = 0; t < T; ++t) {
    lm_chunk c{ids.data() + t, t, 1, blocks.data(), true};
    run.forward({&c, 1}, kv);
    CHECK(rel_diff(run.logits(0), ref.logits() + std::size_t(t) * m.vocab_size, m.vocab_size) <
          1e-5);
  }
  // whole prompt in one chunk: the last row
  lm_chunk whole{ids.data(), 0, T, blocks.data(), true};
  run.forward({&whole, 1}, kv);
  CHECK(rel_diff(run.logits(0), ref.logits() + std::size_t(T - 1) * m.vocab_size, m.vocab_size) <
        1e-5);
}

TEST_CASE("lm: a prompt prefilled in chunks gives the logits of whole-prompt prefill") {
  auto m = small_cfg();
  auto flat = seeded_params(m, 9);
  auto w = lm_weights_of(m, flat.data(), "t");
  paged_model run(w, 96, 4);
  kv_storage kv(m.n_layer, 64, 8, m.n_embd);
  const int T = 77;
  auto ids = ids_of(T, m.vocab_size, 2);
  auto b1 = table(0, 10, 1), b2 = table(20, 10, 3);
  lm_chunk whole{ids.data(), 0, T, b1.data(), true};
  run.forward({&whole, 1}, kv);
  std::vector<float> ref(run.logits(0), run.logits(0) + m.vocab_size);
  for (std::vector<int> cuts : {std::vector<int>{10, 1, 3, 63}, std::vector<int>{5, 5, 5, 62},
                                std::vector<int>{76, 1}, std::vector<int>{2, 75}}) {
    int s = 0;
    for (std::size_t i = 0; i < cuts.size(); ++i) {
      lm_chunk c{ids.data() + s, s, cuts[i], b2.data(), i + 1 == cuts.size()};
      run.forward({&c, 1}, kv);
      s += cuts[i];
    }
    REQUIRE(s == T);
    CHECK(rel_diff(run.logits(0), ref.data(), m.vocab_size) < 1e-5);
  }
}

TEST_CASE("lm: a ragged batch of prefill chunks and decodes equals each sequence alone") {
  auto m = small_cfg();
  auto flat = seeded_params(m, 11);
  auto w = lm_weights_of(m, flat.data(), "t");
  paged_model run(w, 128, 8, 2);  // two threads for the decode-sized chunks
  kv_storage kv(m.n_layer, 120, 4, m.n_embd);
  // Three sequences; each first gets a prefix alone, then one ragged step computes:
  // A decodes 1 token, B prefills a 20-token chunk (no logits), C prefills its last 9 tokens.
  auto a = ids_of(31, m.vocab_size, 3), b = ids_of(50, m.vocab_size, 4),
       c = ids_of(25, m.vocab_size, 5);
  auto ta = table(0, 8, 1), tb = table(8, 13, 1), tc = table(21, 7, 1);
  auto prefix = [&](const std::vector<int>& ids, const std::vector<int>& t, int n) {
    lm_chunk ch{ids.data(), 0, n, t.data(), false};
    run.forward({&ch, 1}, kv);
  };
  prefix(a, ta, 30);
  prefix(b, tb, 10);
  prefix(c, tc, 16);
  std::vector<lm_chunk> batch{{a.data() + 30, 30, 1, ta.data(), true},
                              {b.data() + 10, 10, 20, tb.data(), true},
                              {c.data() + 16, 16, 9, tc.data(), true}};
  run.forward(batch, kv);
  std::vector<std::vector<float>> got;
  for (int i = 0; i < 3; ++i) got.emplace_back(run.logits(i), run.logits(i) + m.vocab_size);
  // alone, in fresh blocks
  auto alone = [&](const std::vector<int>& ids, int n) {
    auto t = table(60, 15, 2);
    lm_chunk ch{ids.data(), 0, n, t.data(), true};
    run.forward({&ch, 1}, kv);
    return std::vector<float>(run.logits(0), run.logits(0) + m.vocab_size);
  };
  CHECK(rel_diff(got[0].data(), alone(a, 31).data(), m.vocab_size) < 1e-5);
  CHECK(rel_diff(got[1].data(), alone(b, 30).data(), m.vocab_size) < 1e-5);
  CHECK(rel_diff(got[2].data(), alone(c, 25).data(), m.vocab_size) < 1e-5);
}

TEST_CASE("lm: bad chunks are refused with a message") {
  auto m = small_cfg();
  auto flat = seeded_params(m, 1);
  auto w = lm_weights_of(m, flat.data(), "t");
  paged_model run(w, 16, 2);
  kv_storage kv(m.n_layer, 40, 4, m.n_embd);
  auto t = table(0, 30, 1);
  std::vector<int> ids(20, 1);
  lm_chunk big{ids.data(), 0, 20, t.data(), true};
  CHECK_THROWS_WITH_AS(run.forward({&big, 1}, kv), doctest::Contains("exceeds the planned 16"),
                       zf::error);
  ids[3] = 5000;
  lm_chunk bad{ids.data(), 0, 5, t.data(), true};
  CHECK_THROWS_WITH_AS(run.forward({&bad, 1}, kv), doctest::Contains("token id 5000"), zf::error);
  lm_chunk far{ids.data(), 94, 3, t.data(), true};
  CHECK_THROWS_WITH_AS(run.forward({&far, 1}, kv), doctest::Contains("outside the context of 96"),
                       zf::error);
}
