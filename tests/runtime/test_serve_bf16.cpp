// Serving in bf16 (runtime/model/lm_bf16, kv_storage's bf16 pools; issue 16): converted weights
// hold every projection and the head as bf16 (half the bytes, fp32 slots released, embeddings
// fp32); the paged forward over them equals the fp32 forward of the bf16-rounded weights (decode
// rows: fp32 math) and stays within bf16's tolerance of the fp32 model, greedy tokens equal; a
// bf16 KV cache gives logits near fp32's; score mode runs them too; in batch-invariant mode a
// sequence's logits are the same bits under any chunking and batching; quantized models and bad
// dtype values are refused by name.
#include <doctest/doctest.h>
#include <fmt/ranges.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "quant_fixtures.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/lm_bf16.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/quant/quantize_model.hpp"
#include "runtime/serve/sampling.hpp"
#include "test_util.hpp"

using namespace zf;
using sz = std::size_t;

namespace {

model_config cfg(const char* arch, bool tied) {
  return zf::testing::quant_test_config(arch, tied, 96);
}

std::vector<int> ids_of(int n, int vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int> v(sz(n), 0);
  for (auto& x : v) x = static_cast<int>(g() % vocab);
  return v;
}

// The fp32 parameters bf16 serving stands for: every projection and the head rounded to bf16.
std::vector<float> rounded(const model_config& m, std::vector<float> flat) {
  const auto L = layout_of(m);
  const model_spec s = spec_of(m);
  auto round = [](float* p, sz n) {
    for (sz i = 0; i < n; ++i) p[i] = kernels::bf16_to_f32(kernels::f32_to_bf16(p[i]));
  };
  for (int l = 0; l < m.n_layer; ++l) {
    const auto b = L.block<float>(flat.data(), l);
    round(b.qkv_w, sz(s.hidden) * s.qkv_dim());
    round(b.o_w, sz(s.q_dim()) * s.hidden);
    if (b.up_w) round(b.up_w, sz(s.hidden) * s.up_dim());
    if (b.down_w) round(b.down_w, sz(s.intermediate) * s.hidden);
    for (int e = 0; e < b.moe.n_experts; ++e) {  // MoE: every expert (the router stays fp32)
      round(b.moe.expert_up_w(e), sz(s.hidden) * s.expert_up_dim());
      round(b.moe.expert_down_w(e), sz(s.moe.expert_intermediate) * s.hidden);
    }
  }
  const auto g = L.globals<float>(flat.data());
  round(g.head ? g.head : g.tok_emb, sz(s.vocab_size) * s.hidden);
  return flat;
}

// Token-by-token paged decoding of ids (every row a decode row): the logits of each position.
std::vector<std::vector<float>> decode_logits(const lm_weights& w, const std::vector<int>& ids,
                                              kv_dtype kt) {
  const model_spec& s = w.cfg;
  paged_model run(w, 64, 4, 2);
  kv_storage kv(s.n_layer, 32, 4, s.kv_dim(), kt);
  std::vector<int> blocks(32);
  for (int b = 0; b < 32; ++b) blocks[sz(b)] = (b * 7) % 32;
  std::vector<std::vector<float>> out;
  for (int t = 0; t < static_cast<int>(ids.size()); ++t) {
    lm_chunk c{ids.data() + t, t, 1, blocks.data(), true};
    run.forward({&c, 1}, kv);
    out.emplace_back(run.logits(0), run.logits(0) + s.vocab_size);
  }
  return out;
}

// Greedy continuation of prompt for n tokens (a prefill chunk, then decodes); margins (when not
// null) receives each step's gap between the best and second-best logit over max |logit|.
std::vector<int> greedy(const lm_weights& w, const std::vector<int>& prompt, int n, kv_dtype kt,
                        std::vector<double>* margins = nullptr) {
  const model_spec& s = w.cfg;
  paged_model run(w, 64, 1, 2);
  kv_storage kv(s.n_layer, 32, 4, s.kv_dim(), kt);
  std::vector<int> blocks(32);
  for (int b = 0; b < 32; ++b) blocks[sz(b)] = b;
  lm_chunk c{prompt.data(), 0, static_cast<int>(prompt.size()), blocks.data(), true};
  run.forward({&c, 1}, kv);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    const float* lg = run.logits(0);
    out.push_back(argmax(lg, s.vocab_size));
    if (margins) {
      double second = -1e30, top = lg[out.back()], scale = 0;
      for (int v = 0; v < s.vocab_size; ++v) {
        if (v != out.back()) second = std::max(second, double(lg[v]));
        scale = std::max(scale, double(std::abs(lg[v])));
      }
      margins->push_back((top - second) / scale);
    }
    lm_chunk d{&out.back(), static_cast<int>(prompt.size()) + i, 1, blocks.data(), true};
    run.forward({&d, 1}, kv);
  }
  return out;
}

}  // namespace

TEST_CASE("bf16 serving: weights halve, fp32 slots released, embeddings and norms stay fp32") {
  for (bool tied : {true, false}) {
    CAPTURE(tied);
    const model_config m = cfg("gpt2", tied);
    const model_spec s = spec_of(m);
    const auto flat = zf::testing::quant_test_params(m, 3);
    lm_weights w = lm_weights_of(m, flat.data(), "t");
    auto copy = bf16_weights_of(w);
    to_bf16_weights(w);
    REQUIRE(is_bf16(w));
    REQUIRE(w.quant->head);
    const sz per_layer = sz(s.hidden) * s.qkv_dim() + sz(s.q_dim()) * s.hidden +
                         sz(s.hidden) * s.up_dim() + sz(s.intermediate) * s.hidden;
    const sz matrices = per_layer * s.n_layer + sz(s.vocab_size) * s.hidden;
    CHECK(w.quant->bytes() == 2 * matrices);
    // the projections' fp32 slots are zero; the embedding (a tied head's too) and norms are not
    const auto b = w.layout.block<const float>(w.store.data(), 1);
    for (sz i = 0; i < sz(s.hidden) * s.qkv_dim(); ++i) REQUIRE(b.qkv_w[i] == 0.0f);
    CHECK(std::memcmp(w.tok_emb, flat.data() + (w.tok_emb - w.store.data()),
                      sz(s.vocab_size) * s.hidden * sizeof(float)) == 0);
    CHECK(b.norm1_w[0] == flat[sz(b.norm1_w - w.store.data())]);
    to_bf16_weights(w);  // once bf16, nothing to do
    CHECK(is_bf16(w));
    // the copy serves the same numbers
    const auto ids = ids_of(12, s.vocab_size, 4);
    const auto a = decode_logits(w, ids, kv_dtype::fp32);
    const auto c = decode_logits(*copy, ids, kv_dtype::fp32);
    CHECK(a == c);
  }
}

TEST_CASE("bf16 serving: paged logits equal fp32 over rounded weights, near fp32, greedy equal") {
  for (auto [arch, tied] :
       {std::pair{"gpt2", true}, std::pair{"gpt2", false}, std::pair{"llama", false}}) {
    CAPTURE(std::string(arch));
    const model_config m = cfg(arch, tied);
    const model_spec s = spec_of(m);
    const auto flat = zf::testing::quant_test_params(m, 5);
    const lm_weights fp32 = lm_weights_of(m, flat.data(), "fp32");
    const auto fr = rounded(m, flat);
    const lm_weights fp32_rounded = lm_weights_of(m, fr.data(), "rounded");
    lm_weights bf = lm_weights_of(m, flat.data(), "bf16");
    to_bf16_weights(bf);
    const auto ids = ids_of(30, s.vocab_size, 6);
    const auto ref = decode_logits(fp32, ids, kv_dtype::fp32);
    const auto rnd = decode_logits(fp32_rounded, ids, kv_dtype::fp32);
    const auto got = decode_logits(bf, ids, kv_dtype::fp32);
    const auto kv16 = decode_logits(bf, ids, kv_dtype::bf16);
    double worst_rnd = 0, worst_ref = 0, worst_kv = 0;
    for (sz t = 0; t < ids.size(); ++t) {
      worst_rnd = std::max(worst_rnd, zf::testing::rel_diff(got[t].data(), rnd[t]));
      worst_ref = std::max(worst_ref, zf::testing::rel_diff(got[t].data(), ref[t]));
      worst_kv = std::max(worst_kv, zf::testing::rel_diff(kv16[t].data(), ref[t]));
    }
    MESSAGE(std::string(arch) << ": bf16 vs fp32-of-rounded " << worst_rnd << ", vs fp32 "
                              << worst_ref << ", bf16 weights + KV vs fp32 " << worst_kv);
    // decode rows: fp32 math over the same weights (a tied head's rounded copy would round the
    // embedding lookup too, which bf16 serving keeps fp32)
    if (!tied) CHECK(worst_rnd < 2e-5);
    CHECK(worst_ref < 5e-2);  // bf16 weights: 2^-9 relative per weight, x4-spread random model
    CHECK(worst_kv < 5e-2);
    // greedy text on a short prompt (prefill chunk of 20 rows: oneDNN's bf16 matmul)
    const auto prompt = ids_of(20, s.vocab_size, 7);
    // A random model has near ties: tokens are compared up to the first step whose fp32 margin
    // is within twice the logit error measured above (after it the texts may part honestly).
    std::vector<double> margin;
    const auto g32 = greedy(fp32, prompt, 8, kv_dtype::fp32, &margin);
    int sure = 0;
    while (sure < 8 && margin[sz(sure)] > 2 * std::max(worst_ref, worst_kv)) ++sure;
    const auto gb = greedy(bf, prompt, 8, kv_dtype::bf16),
               gbf = greedy(bf, prompt, 8, kv_dtype::fp32);
    MESSAGE(fmt::format("greedy fp32 {} | bf16 {} | bf16 + fp32 KV {}; {} compared",
                        fmt::join(g32, ","), fmt::join(gb, ","), fmt::join(gbf, ","), sure));
    CHECK(sure >= 2);
    auto head = [&](const std::vector<int>& v) {
      return std::vector<int>(v.begin(), v.begin() + sure);
    };
    CHECK(head(gb) == head(g32));
    CHECK(head(gbf) == head(g32));
  }
}

TEST_CASE("bf16 serving: score mode runs the bf16 linears, equal to paged decode rows") {
  const model_config m = cfg("llama", false);
  const model_spec s = spec_of(m);
  const auto flat = zf::testing::quant_test_params(m, 8);
  lm_weights bf = lm_weights_of(m, flat.data(), "bf16");
  to_bf16_weights(bf);
  const auto ids = ids_of(12, s.vocab_size, 9);
  transformer t(m, true, false);
  std::memcpy(t.params().data(), bf.store.data(), bf.store.size() * sizeof(float));
  t.set_quant(bf.quant);
  t.forward(ids.data(), nullptr, 1, 12);  // 12 rows: the direct kernel, as decode
  const auto paged = decode_logits(bf, ids, kv_dtype::fp32);
  for (int p = 0; p < 12; ++p)
    CHECK(zf::testing::rel_diff(t.logits() + sz(p) * s.vocab_size, paged[sz(p)]) < 3e-5);
}

TEST_CASE("bf16, q8_0, q4_0 serving: batch-invariant logits are the same bits under any chunking") {
  // q8_0 / q4_0 also quantize each activation row on its own (kernels/ggml_quant.hpp), so a row's
  // numbers must not depend on its chunk either.
  const kernels::batch_invariant_scope inv(true);
  const model_config m = cfg("gpt2", true);
  const model_spec s = spec_of(m);
  const auto flat = zf::testing::quant_test_params(m, 10);
  for (const char* dtype : {"bf16", "q8_0", "q4_0"}) {
    CAPTURE(dtype);
    lm_weights bf = lm_weights_of(m, flat.data(), "bf16");
    to_serving_weights(bf, parse_weight_dtype(dtype, "--dtype"), "--dtype");
    const int n_seq = 3, len = 40, bs = 4, per = len / bs;
    std::vector<std::vector<int>> seqs;
    for (int i = 0; i < n_seq; ++i) seqs.push_back(ids_of(len, s.vocab_size, 20 + i));
    // logits of every position of every sequence, advanced together by chunks of 1..max_chunk
    auto run_all = [&](int max_chunk, unsigned seed) {
      paged_model run(bf, 64, n_seq, 2);
      kv_storage kv(s.n_layer, per * n_seq, bs, s.kv_dim(), kv_dtype::bf16);
      std::vector<std::vector<int>> tables(n_seq);
      for (int i = 0; i < n_seq; ++i)
        for (int b = 0; b < per; ++b) tables[sz(i)].push_back(b * n_seq + i);
      std::vector<std::vector<std::vector<float>>> out(n_seq);
      std::vector<int> done(n_seq, 0);
      std::mt19937 g(seed);
      while (done[0] < len || done[1] < len || done[2] < len) {
        std::vector<lm_chunk> chunks;
        std::vector<int> who;
        for (int i = 0; i < n_seq; ++i) {
          if (done[sz(i)] == len) continue;
          const int c = std::min(len - done[sz(i)], 1 + int(g() % max_chunk));
          chunks.push_back(
              {seqs[sz(i)].data() + done[sz(i)], done[sz(i)], c, tables[sz(i)].data(), true});
          who.push_back(i);
          done[sz(i)] += c;
        }
        run.forward(chunks, kv);
        for (sz j = 0; j < who.size(); ++j)
          out[sz(who[j])].emplace_back(run.logits(int(j)), run.logits(int(j)) + s.vocab_size);
      }
      return out;
    };
    const auto one = run_all(1, 1);    // every row alone
    const auto many = run_all(20, 2);  // ragged chunks up to 20 rows (past the direct limit)
    // the chunk ends differ: compare the last position of every sequence, and decode positions
    for (int i = 0; i < n_seq; ++i) CHECK(many[sz(i)].back() == one[sz(i)].back());
  }
}

TEST_CASE("bf16 serving: MoE experts in bf16 equal fp32 over rounded weights, near fp32") {
  for (auto [arch, residual] :
       {std::pair{"gpt2", false}, std::pair{"gpt2", true}, std::pair{"llama", false}}) {
    CAPTURE(std::string(arch));
    CAPTURE(residual);
    model_config m = cfg(arch, false);
    m.moe.num_experts = 4;
    m.moe.top_k = 2;
    m.moe.dropless = true;
    m.moe.expert_intermediate = 48;
    m.moe.residual = residual;
    const model_spec s = spec_of(m);
    const auto flat = zf::testing::quant_test_params(m, 13);
    const lm_weights fp32 = lm_weights_of(m, flat.data(), "fp32");
    const auto fr = rounded(m, flat);
    const lm_weights fp32_rounded = lm_weights_of(m, fr.data(), "rounded");
    lm_weights bf = lm_weights_of(m, flat.data(), "bf16");
    to_bf16_weights(bf);
    REQUIRE(is_bf16(bf));
    // every projection, expert and the head in bf16 (half their fp32 bytes)
    sz matrices = sz(s.vocab_size) * s.hidden;
    for (int l = 0; l < s.n_layer; ++l) {
      matrices += sz(s.hidden) * s.qkv_dim() + sz(s.q_dim()) * s.hidden;
      if (s.dense_mlp(l)) matrices += sz(s.hidden) * s.up_dim() + sz(s.intermediate) * s.hidden;
      matrices += sz(s.moe.experts_of(l)) *
                  (sz(s.hidden) * s.expert_up_dim() + sz(s.moe.expert_intermediate) * s.hidden);
    }
    CHECK(bf.quant->bytes() == 2 * matrices);
    const auto b = bf.layout.block<const float>(bf.store.data(), s.n_layer - 1);
    REQUIRE(b.moe.n_experts == 4);
    std::size_t nonzero = 0;  // an expert's fp32 slot released, the router's kept
    for (sz i = 0; i < sz(s.hidden) * s.expert_up_dim(); ++i)
      nonzero += b.moe.expert_up_w(2)[i] != 0;
    CHECK(nonzero == 0);
    CHECK(b.moe.router_w[0] == flat[sz(b.moe.router_w - bf.store.data())]);
    const auto ids = ids_of(24, s.vocab_size, 14);
    const auto ref = decode_logits(fp32, ids, kv_dtype::fp32);
    const auto rnd = decode_logits(fp32_rounded, ids, kv_dtype::fp32);
    const auto got = decode_logits(bf, ids, kv_dtype::fp32);
    double worst_rnd = 0, worst_ref = 0;
    for (sz t = 0; t < ids.size(); ++t) {
      worst_rnd = std::max(worst_rnd, zf::testing::rel_diff(got[t].data(), rnd[t]));
      worst_ref = std::max(worst_ref, zf::testing::rel_diff(got[t].data(), ref[t]));
    }
    MESSAGE(fmt::format("{}{}: bf16 MoE vs fp32-of-rounded {}, vs fp32 {}", arch,
                        residual ? " + residual" : "", worst_rnd, worst_ref));
    CHECK(worst_rnd < 2e-5);  // decode rows: fp32 math over the same (rounded) experts
    CHECK(worst_ref < 1e-1);  // a random MoE model spreads bf16's 2^-9 more than a dense one
    CHECK(worst_ref > 1e-6);  // and the experts really are bf16
    // score mode: the transformer with the same bf16 linears gives the paged decode rows'
    // logits (12 rows: the direct kernel, as decode)
    transformer tm(m, true, false);
    std::memcpy(tm.params().data(), bf.store.data(), bf.store.size() * sizeof(float));
    tm.set_quant(bf.quant);
    tm.forward(ids.data(), nullptr, 1, 12);
    for (int p = 0; p < 12; ++p)
      CHECK(zf::testing::rel_diff(tm.logits() + sz(p) * s.vocab_size, got[sz(p)]) < 3e-5);
  }
}

TEST_CASE("bf16 serving: quantized models and bad dtype values are refused by name") {
  const model_config m = cfg("gpt2", true);
  const auto flat = zf::testing::quant_test_params(m, 11);
  lm_weights w = lm_weights_of(m, flat.data(), "q");
  quant::quantize_options o;
  o.s = quant::scheme_named("w4a16", 32);
  attach_quant(w, quant::quantize_model(spec_of(m), flat.data(), o, nullptr));
  const std::string msg = zf::testing::error_of([&] { to_bf16_weights(w); });
  CHECK(zf::testing::contains(msg, "--dtype bf16"));
  CHECK(zf::testing::contains(msg, "already quantized (w4a16"));
  CHECK(zf::testing::contains(zf::testing::error_of([&] { parse_weight_dtype("fp16", "--dtype"); }),
                              "--dtype: expected fp32, bf16, f16, q8_0 or q4_0, got 'fp16'"));
  const std::string bad =
      zf::testing::error_of([] { load_config("", std::vector<std::string>{"engine.dtype=fp16"}); });
  CHECK(zf::testing::contains(bad, "engine.dtype"));
  CHECK(zf::testing::contains(bad, "fp16"));
  const std::string bad_kv = zf::testing::error_of(
      [] { load_config("", std::vector<std::string>{"engine.kv_dtype=int8"}); });
  CHECK(zf::testing::contains(bad_kv, "engine.kv_dtype"));
}
