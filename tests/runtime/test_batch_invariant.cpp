// Batch-invariant mode (kernels::batch_invariant_scope): the paged forward's log-probs for a
// position equal score mode's bit for bit, however the sequence was chunked and whatever other
// sequences shared its forward passes, for GPT-2 and Llama (GQA), dense and MoE (dropless: a
// token's experts do not depend on its batch). Without the mode they agree only
// to rounding, which is why the mode exists.
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <random>

#include "kernels/dispatch.hpp"
#include "kernels/softmax.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/model/score.hpp"

using namespace zf;

namespace {

// moe: every layer a dropless MoE of 4 experts, top-2 (the engine never drops tokens).
model_spec spec(bool llama, bool moe = false) {
  model_config m;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = 80;
  m.vocab_size = 173;
  if (llama) {
    m.arch = "llama";
    m.n_kv_head = 2;
    m.tied_head = false;
  }
  if (moe) {
    m.moe.num_experts = 4;
    m.moe.top_k = 2;
    m.moe.dropless = true;
    m.moe.expert_intermediate = 48;
  }
  return spec_of(m);
}

constexpr int k_seqs = 5, k_len = 70;

struct fixture {
  model_spec s;
  transformer model;
  std::vector<std::vector<int>> seqs;
  explicit fixture(bool llama, bool moe = false) : s(spec(llama, moe)), model(s, true, false) {
    model.init_weights(11);
    for (std::size_t i = 0; i < model.layout().total; ++i) model.params()[i] *= 3.0f;
    std::mt19937 g(5);
    for (int i = 0; i < k_seqs; ++i) {
      seqs.emplace_back(k_len);
      for (auto& x : seqs.back()) x = int(g() % s.vocab_size);
    }
  }
  // Score mode: lp[i][p] = log p(seqs[i][p+1] | prefix), all sequences in one padded batch.
  std::vector<std::vector<float>> scored() {
    scorer sc(model, k_len + 3, 3);  // padding and batch rows around every sequence
    std::vector<score_item> items;
    for (auto& q : seqs) items.push_back({q, 1});
    std::vector<std::vector<float>> out;
    for (auto& r : sc.score(items)) out.push_back(r.logprobs);
    return out;
  }
  // Paged mode: sequences advance together, each by a random chunk per forward (1..12 tokens),
  // the logits of each chunk's last row giving one position's log-prob.
  std::map<std::pair<int, int>, float> paged(unsigned seed) {
    const lm_weights w = copy_lm_weights(s, model.params().data());
    paged_model run(w, 64, k_seqs, 2);
    const int bs = 8, per_seq = (k_len + bs - 1) / bs;
    kv_storage kv(s.n_layer, per_seq * k_seqs, bs, s.kv_dim());
    std::vector<std::vector<int>> tables(k_seqs);
    for (int i = 0; i < k_seqs; ++i)
      for (int b = 0; b < per_seq; ++b) tables[i].push_back(b * k_seqs + i);  // interleaved
    std::vector<int> done(k_seqs, 0);
    std::mt19937 g(seed);
    std::map<std::pair<int, int>, float> lp;
    while (true) {
      std::vector<lm_chunk> chunks;
      std::vector<int> who;
      int rows = 0;
      for (int i = 0; i < k_seqs; ++i) {
        const int left = k_len - 1 - done[i];
        if (left <= 0 || g() % 4 == 0) continue;
        const int len = std::min({left, 1 + int(g() % 12), 64 - rows});
        if (len <= 0) continue;
        chunks.push_back({seqs[i].data() + done[i], done[i], len, tables[i].data(), true});
        who.push_back(i);
        rows += len;
      }
      if (chunks.empty()) {
        if (std::all_of(done.begin(), done.end(), [](int d) { return d >= k_len - 1; })) break;
        continue;
      }
      run.forward(chunks, kv);
      for (std::size_t c = 0; c < chunks.size(); ++c) {
        const int i = who[c], last = chunks[c].start + chunks[c].len - 1;
        const float* row = run.logits(int(c));
        lp[{i, last}] = float(row[seqs[i][last + 1]] - kernels::log_sum_exp(row, s.vocab_size));
        done[i] += chunks[c].len;
      }
    }
    return lp;
  }
};

}  // namespace

TEST_CASE("batch-invariant: paged log-probs equal score mode's bits under any chunking") {
  for (auto [llama, moe] : {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
    CAPTURE(llama);
    CAPTURE(moe);
    fixture f(llama, moe);
    kernels::batch_invariant_scope on(true);
    const auto ref = f.scored();
    for (unsigned seed : {1u, 2u, 3u}) {
      CAPTURE(seed);
      const auto got = f.paged(seed);
      REQUIRE(got.size() > std::size_t(k_seqs * 8));
      int equal = 0;
      for (auto& [key, v] : got) {
        const float want = ref[key.first][key.second];
        if (std::memcmp(&v, &want, sizeof v) == 0) ++equal;
        INFO("seq " << key.first << " pos " << key.second);
        CHECK(v == want);
      }
      CHECK(equal == int(got.size()));
    }
  }
}

TEST_CASE(
    "batch-invariant: off, paged and score agree to rounding only, on, score is unchanged "
    "by the batch it is in") {
  fixture f(true);
  const auto plain = f.scored();
  const auto got = f.paged(7);
  double worst = 0;
  for (auto& [key, v] : got)
    worst = std::max(worst, double(std::abs(v - plain[key.first][key.second])));
  MESSAGE("without the mode, max |paged - score| = " << worst);
  CHECK(worst < 1e-4);
  kernels::batch_invariant_scope on(true);
  scorer alone(f.model, k_len, 1);
  const auto a = alone.score({{f.seqs[2], 1}});
  CHECK(a[0].logprobs == f.scored()[2]);  // T and batch differ: the same bits
}
