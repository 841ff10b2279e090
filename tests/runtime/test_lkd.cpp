// LKD (runtime/quant/lkd, quantize_model's lkd_steps): the lone block's backward, which gives
// LKD's straight-through gradient, matches finite differences of the output MSE; lone blocks
// chained over cached hidden states give the full model's logits (the cache GPTQ and LKD share);
// LKD lowers the layer output error of RTN w4a16 and fp4 on held-out windows, not only on the
// calibration ones; missing calibration is refused by the option's name; the method says "+lkd".
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/embedding.hpp"
#include "kernels/matmul.hpp"
#include "quant_fixtures.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/block.hpp"
#include "runtime/model/model.hpp"
#include "runtime/quant/lkd.hpp"
#include "runtime/quant/quantize_model.hpp"

using namespace zf;
namespace k = zf::kernels;

namespace {

model_config lkd_cfg(const char* arch) {
  return zf::testing::quant_test_config(arch, true);
}

std::vector<float> lkd_params(const model_config& m, uint64_t seed) {
  return zf::testing::quant_test_params(m, seed);
}

std::vector<int> random_ids(int n, int vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int> v(std::size_t(n), 0);
  for (auto& x : v) x = static_cast<int>(g() % vocab);
  return v;
}

quant::calibration random_calibration(int windows, int t, int vocab, unsigned seed) {
  quant::calibration c;
  c.windows = windows;
  c.t = t;
  c.ids = random_ids(windows * t, vocab, seed);
  return c;
}

// Mean of (a - b)^2 over n values, in double.
double mse(const float* a, const float* b, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s / double(n);
}

// Embeddings of ids [b, t]: the hidden states entering layer 0, [b*t, C].
std::vector<float> embed(const model_config& m, const std::vector<float>& flat,
                         const std::vector<int>& ids, int b, int t) {
  const auto g = layout_of(m).globals<const float>(flat.data());
  std::vector<float> x(std::size_t(b) * t * m.n_embd);
  k::embedding_forward(ids.data(), g.tok_emb, g.pos_emb, x.data(), b, t, m.n_embd);
  return x;
}

}  // namespace

TEST_CASE("lkd: the lone block's backward (the STE gradient) matches finite differences") {
  for (const char* arch : {"gpt2", "llama"}) {
    CAPTURE(std::string(arch));
    const model_config m = lkd_cfg(arch);
    const model_spec s = spec_of(m);
    const auto flat = lkd_params(m, 21);
    quant::layer_runner run(s);
    run.load(flat.data(), 1);
    const int b = 2, t = 8;
    const std::size_t n = std::size_t(b) * t * s.hidden;
    std::mt19937 g(22);
    std::normal_distribution<float> N(0.0f, 1.0f);
    std::vector<float> x(n), y(n), out(n);
    for (auto& v : x) v = N(g);
    for (auto& v : y) v = N(g);
    // LKD's loss: mean (out - y)^2, its gradient 2 (out - y) / n into the backward
    auto loss = [&] {
      run.forward(x.data(), b, t, out.data());
      return mse(out.data(), y.data(), n);
    };
    loss();
    for (std::size_t i = 0; i < n; ++i) out[i] = 2.0f * (out[i] - y[i]) / float(n);
    run.zero_grad();
    run.backward(x.data(), b, t, out.data());
    const auto w = run.weights(), gr = run.grads();
    float* ws[4] = {w.qkv_w, w.o_w, w.up_w, w.down_w};
    const float* gs[4] = {gr.qkv_w, gr.o_w, gr.up_w, gr.down_w};
    const std::size_t sizes[4] = {
        std::size_t(s.hidden) * s.qkv_dim(), std::size_t(s.q_dim()) * s.hidden,
        std::size_t(s.hidden) * s.up_dim(), std::size_t(s.intermediate) * s.hidden};
    for (int i = 0; i < 4; ++i) {
      // the largest-gradient element and a few random ones of each projection
      std::size_t big = 0;
      for (std::size_t e = 0; e < sizes[i]; ++e)
        if (std::abs(gs[i][e]) > std::abs(gs[i][big])) big = e;
      std::vector<std::size_t> probe = {big, g() % sizes[i], g() % sizes[i]};
      for (std::size_t e : probe) {
        const float keep = ws[i][e], h = 1e-2f;
        ws[i][e] = keep + h;
        const double up = loss();
        ws[i][e] = keep - h;
        const double down = loss();
        ws[i][e] = keep;
        const double fd = (up - down) / (2.0 * h);
        CAPTURE(i);
        CAPTURE(e);
        CHECK(std::abs(fd - gs[i][e]) <= 2e-2 * std::abs(gs[i][big]) + 1e-7);
      }
    }
  }
}

TEST_CASE("lkd: lone blocks chained over cached hidden states give the full model's logits") {
  for (const char* arch : {"gpt2", "llama"}) {
    CAPTURE(std::string(arch));
    const model_config m = lkd_cfg(arch);
    const model_spec s = spec_of(m);
    const auto flat = lkd_params(m, 31);
    const int b = 2, t = 16, BT = b * t, C = s.hidden, V = s.vocab_size;
    const auto ids = random_ids(BT, V, 32);
    auto x = embed(m, flat, ids, b, t);
    quant::layer_runner run(s);
    for (int l = 0; l < m.n_layer; ++l) {
      run.load(flat.data(), l);
      run.forward(x.data(), b, t, x.data());
    }
    const auto g = layout_of(m).globals<const float>(flat.data());
    std::vector<float> ln(x.size()), logits(std::size_t(BT) * V);
    block::norm_forward(s, x.data(), g.normf_w, g.normf_b, ln.data(), nullptr, nullptr, BT);
    k::gemm(false, true, BT, V, C, 1.0f, ln.data(), 0, g.tok_emb, 0, 0.0f, logits.data(), 0);
    transformer ref(m, true, false);
    std::memcpy(ref.params().data(), flat.data(), flat.size() * sizeof(float));
    ref.forward(ids.data(), nullptr, b, t);
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
      worst = std::max(worst, std::abs(double(logits[i]) - ref.logits()[i]));
      scale = std::max(scale, std::abs(double(ref.logits()[i])));
    }
    CHECK(worst <= 1e-5 * scale);
  }
}

// The quantity LKD minimises, measured on windows it never saw: layer 0's output under q against
// the float layer's, on the same held-out embeddings.
TEST_CASE("lkd: lowers the layer output error of RTN w4a16 and fp4 on held-out windows") {
  for (const char* arch : {"gpt2", "llama"})
    for (const char* sch : {"w4a16", "fp4"}) {
      CAPTURE(std::string(arch));
      CAPTURE(std::string(sch));
      const model_config m = lkd_cfg(arch);
      const model_spec s = spec_of(m);
      const auto flat = lkd_params(m, 41);
      // 4096 calibration rows: with fewer, LKD fits them and gains less on other windows
      const auto cal = random_calibration(128, 32, m.vocab_size, 42);
      quant::quantize_options o;
      o.s = quant::scheme_named(sch, 32);
      const auto rtn = quant::quantize_model(s, flat.data(), o, &cal);
      o.lkd_steps = 200;
      quant::quantize_report rep;
      const auto lkd = quant::quantize_model(s, flat.data(), o, &cal, &rep);
      REQUIRE(rep.lkd.size() == 2);
      for (const auto& r : rep.lkd) {  // on the calibration windows
        MESSAGE(std::string(arch) << " " << std::string(sch) << " calibration MSE " << r.mse_before
                                  << " -> " << r.mse_after);
        CHECK(r.improved);
        CHECK(r.mse_after < 0.8 * r.mse_before);
      }
      const int b = 8, t = 32;
      const auto x = embed(m, flat, random_ids(b * t, m.vocab_size, 43), b, t);
      std::vector<float> ref(x.size()), out(x.size());
      quant::layer_runner run(s);
      run.load(flat.data(), 0);
      run.forward(x.data(), b, t, ref.data());
      run.set_quant(&rtn->blocks[0]);
      run.forward(x.data(), b, t, out.data());
      const double e_rtn = mse(out.data(), ref.data(), out.size());
      run.set_quant(&lkd->blocks[0]);
      run.forward(x.data(), b, t, out.data());
      const double e_lkd = mse(out.data(), ref.data(), out.size());
      MESSAGE(std::string(arch) << " " << std::string(sch) << " held-out layer-0 MSE: rtn " << e_rtn
                                << ", rtn+lkd " << e_lkd);
      CHECK(e_lkd < 0.9 * e_rtn);
      // and the whole model's logits (the head quantized by RTN in both) on those windows
      const auto ids = random_ids(b * t, m.vocab_size, 43);
      std::vector<float> logits[3];
      std::shared_ptr<const lm_quant> qs[3] = {nullptr, rtn, lkd};
      for (int i = 0; i < 3; ++i) {
        transformer tm(m, true, false);
        std::memcpy(tm.params().data(), flat.data(), flat.size() * sizeof(float));
        tm.set_quant(qs[i]);
        tm.forward(ids.data(), nullptr, b, t);
        logits[i].assign(tm.logits(), tm.logits() + std::size_t(b) * t * m.vocab_size);
      }
      const std::size_t nl = logits[0].size();
      const double l_rtn = mse(logits[1].data(), logits[0].data(), nl),
                   l_lkd = mse(logits[2].data(), logits[0].data(), nl);
      MESSAGE(std::string(arch) << " " << std::string(sch) << " held-out logits MSE: rtn " << l_rtn
                                << ", rtn+lkd " << l_lkd);
      CHECK(l_lkd < l_rtn);
    }
}

TEST_CASE("lkd: refused without calibration by the option's name, recorded in the method") {
  const model_config m = lkd_cfg("gpt2");
  const model_spec s = spec_of(m);
  const auto flat = lkd_params(m, 51);
  quant::quantize_options o;
  o.s = quant::scheme_named("w4a16", 32);
  o.lkd_steps = 10;
  CHECK_THROWS_WITH_AS(quant::quantize_model(s, flat.data(), o, nullptr),
                       doctest::Contains("--lkd-steps 10: LKD needs calibration"), zf::error);
  quant::calibration empty;
  CHECK_THROWS_WITH_AS(quant::quantize_model(s, flat.data(), o, &empty),
                       doctest::Contains("--lkd-steps"), zf::error);
  o.lkd_steps = -1;
  CHECK_THROWS_WITH_AS(quant::quantize_model(s, flat.data(), o, nullptr),
                       doctest::Contains("--lkd-steps -1"), zf::error);
  const auto cal = random_calibration(8, 16, m.vocab_size, 52);
  o.lkd_steps = 5;
  CHECK(quant::quantize_model(s, flat.data(), o, &cal)->method == "rtn+lkd");
  o.method = "gptq";
  o.lorc_rank = 4;
  const auto q = quant::quantize_model(spec_of(lkd_cfg("llama")),
                                       lkd_params(lkd_cfg("llama"), 53).data(), o, &cal);
  CHECK(q->method == "gptq+lkd+lorc4");
  CHECK(q->linears[0].rank == 4);  // LoRC after LKD, on the final codes
}
