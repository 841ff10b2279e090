// The MoE routing options beyond the PyTorch twin's files (docs/moe.md): gate_scale (DeepSeek's
// routed_scaling_factor), Switch's router input jitter and DeepSeek-V3's auxiliary-loss-free
// routing bias, each against a closed form: a rescaling that must not change the function, finite
// differences of a smooth (every-expert) router, and the sign rule of the bias update.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/zero.hpp"

using namespace zf;

namespace {

constexpr int k_b = 2, k_t = 12, k_vocab = 61;

model_config tiny(bool llama) {
  model_config m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 16;
  m.n_positions = 16;
  m.vocab_size = k_vocab;
  if (llama) {
    m.arch = "llama";
    m.tied_head = false;
  }
  m.moe.num_experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_intermediate = 12;
  m.moe.dropless = true;
  return m;
}

void batch(int seed, std::vector<int>& in, std::vector<int>& tg) {
  in.resize(k_b * k_t);
  tg.resize(k_b * k_t);
  for (int i = 0; i < k_b * k_t; ++i) {
    in[std::size_t(i)] = (i * 7 + seed * 13) % k_vocab;
    tg[std::size_t(i)] = (i * 11 + seed * 5 + 3) % k_vocab;
  }
}

struct model_run {
  transformer model;
  explicit model_run(const model_config& m, uint64_t seed = 7) : model(m) {
    model.init_weights(seed);
  }
  float train_loss(const std::vector<int>& in, const std::vector<int>& tg) {
    model.zero_grad();
    return model.forward_backward(in.data(), tg.data(), k_b, k_t);
  }
  const param_info& param(const std::string& name) const {
    for (auto& p : model.layout().params)
      if (p.name == name) return p;
    FAIL("no tensor " << name);
    return model.layout().params.front();
  }
};

bool ends_with_any(const std::string& s, std::initializer_list<const char*> tails) {
  for (const char* t : tails)
    if (s.ends_with(t)) return true;
  return false;
}

}  // namespace

TEST_CASE(
    "moe routing: gate_scale s with the experts' output projections divided by s is the same "
    "model") {
  for (bool llama : {false, true}) {
    CAPTURE(llama);
    auto m = tiny(llama);
    model_run ref(m);
    m.moe.gate_scale = 2.5;
    model_run scaled(m);
    std::copy_n(ref.model.params().data(), ref.model.layout().total, scaled.model.params().data());
    for (auto& p : scaled.model.layout().params)  // mlp.experts.{e}.c_proj.* / down_proj.weight
      if (p.name.find(".experts.") != std::string::npos &&
          ends_with_any(p.name, {"c_proj.weight", "c_proj.bias", "down_proj.weight"}))
        for (std::size_t i = 0; i < p.numel; ++i)
          scaled.model.params().data()[p.offset + i] /= 2.5f;
    std::vector<int> in, tg;
    batch(1, in, tg);
    const float a = ref.model.forward(in.data(), tg.data(), k_b, k_t);
    const float b = scaled.model.forward(in.data(), tg.data(), k_b, k_t);
    CHECK(b == doctest::Approx(a).epsilon(1e-5));
    CHECK(ref.train_loss(in, tg) == doctest::Approx(scaled.train_loss(in, tg)).epsilon(1e-5));
    // The router sees the same function of its weights: the same gradient.
    const param_info& r = ref.param(llama ? "layers.0.mlp.router.weight" : "h.0.mlp.router.weight");
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < r.numel; ++i) {
      const double x = ref.model.grads().data()[r.offset + i];
      diff = std::max(diff, std::abs(x - scaled.model.grads().data()[r.offset + i]));
      norm = std::max(norm, std::abs(x));
    }
    CHECK(norm > 0);
    CHECK(diff <= 1e-4 * norm);
  }
}

TEST_CASE(
    "moe routing: jitter factors lie in [1 - eps, 1 + eps], average 1 and depend on row and column "
    "alone") {
  double sum = 0, lo = 2, hi = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const float f = moe::jitter_factor(0.1, 42, i / 100, i % 100);
    sum += f;
    lo = std::min<double>(lo, f);
    hi = std::max<double>(hi, f);
  }
  CHECK(lo >= 0.9 - 1e-6);
  CHECK(hi <= 1.1 + 1e-6);
  CHECK(lo < 0.901);  // the range is used, not a constant
  CHECK(hi > 1.099);
  CHECK(std::abs(sum / n - 1.0) < 2e-3);  // uniform: sd of the mean 0.1 / sqrt(3 n) = 4e-4
  CHECK(moe::jitter_factor(0.1, 42, 3, 5) == moe::jitter_factor(0.1, 42, 3, 5));
  CHECK(moe::jitter_factor(0.1, 42, 3, 5) != moe::jitter_factor(0.1, 43, 3, 5));
  CHECK(moe::jitter_factor(0.1, 42, 3, 5) != moe::jitter_factor(0.1, 42, 5, 3));
}

TEST_CASE(
    "moe routing: jitter changes training forwards only, and its gradients match finite "
    "differences") {
  // Every expert chosen with its softmax gate (top_k = E, no renormalisation, dropless): the loss
  // is a smooth function of the router, so central differences check the jittered backward.
  auto m = tiny(false);
  m.moe.top_k = 4;
  m.moe.norm_topk = false;
  m.moe.aux_loss_coef = 0;  // the returned loss is the cross-entropy: differentiate only it
  m.moe.z_loss_coef = 0;
  model_run plain(m);
  m.moe.jitter = 0.3;
  model_run jit(m);
  std::copy_n(plain.model.params().data(), plain.model.layout().total, jit.model.params().data());
  jit.model.set_route_seed(99);
  std::vector<int> in, tg;
  batch(2, in, tg);
  CHECK(jit.model.forward(in.data(), tg.data(), k_b, k_t) ==
        plain.model.forward(in.data(), tg.data(), k_b, k_t));  // evaluation: no jitter
  const float l0 = jit.train_loss(in, tg);
  CHECK(l0 != plain.train_loss(in, tg));
  CHECK(jit.train_loss(in, tg) == l0);  // the same seed draws the same factors
  std::vector<float> grads(jit.model.grads().data(),
                           jit.model.grads().data() + jit.model.layout().total);
  // Router weights (the jittered input in dW) and ln_2's weight (the jitter in dln2).
  for (const char* name : {"h.0.mlp.router.weight", "h.1.mlp.router.weight", "h.0.ln_2.weight"}) {
    CAPTURE(name);
    const param_info& p = jit.param(name);
    int checked = 0;
    for (std::size_t i = 0; i < p.numel && checked < 6; i += p.numel / 6 + 1, ++checked) {
      float& w = jit.model.params().data()[p.offset + i];
      const float keep = w, h = 1e-2f;
      w = keep + h;
      const double up = jit.train_loss(in, tg);
      w = keep - h;
      const double down = jit.train_loss(in, tg);
      w = keep;
      const double fd = (up - down) / (2.0 * h), g = grads[p.offset + i];
      CAPTURE(i);
      CHECK(std::abs(fd - g) <= 0.02 * std::abs(g) + 2e-4);
    }
  }
}

TEST_CASE(
    "moe routing: the auxiliary-loss-free bias steers the choice and moves by rate * sign(mean - "
    "load)") {
  auto m = tiny(true);
  m.moe.bias_update_rate = 0.05;
  m.moe.aux_loss_coef = 0;
  const param_layout layout = layout_of(m);
  const std::size_t b0 = layout.router_bias(0), b1 = layout.router_bias(1);
  REQUIRE(b0 != param_layout::none);
  REQUIRE(b1 != param_layout::none);
  CHECK(b1 > b0);
  CHECK(count_params(spec_of(m)).total() == double(layout.total));
  CHECK(layout_of(tiny(true)).router_bias(0) == param_layout::none);  // off: no tensor
  auto comms = comm::make_local_group(1);
  optimizer_config o;
  o.lr = 0;  // only the biases move
  zero_rank z(spec_of(m), o, 0, *comms[0]);
  std::vector<float> init(layout.total);
  init_params(layout, m.n_layer, 5, init.data());
  for (int e = 0; e < 4; ++e) init[b0 + std::size_t(e)] = e == 2 ? 3.0f : 0.0f;  // expert 2 wins
  for (int l = 0; l < 2; ++l) {  // routers of std 1: tokens' scores differ (std 0.02: all alike)
    const std::size_t r = layout.router_bias(l) - std::size_t(m.n_embd) * 4;
    for (std::size_t i = 0; i < std::size_t(m.n_embd) * 4; ++i) init[r + i] *= 50.0f;
  }
  z.import_state(init.data(), nullptr, nullptr);
  std::vector<int> in, tg;
  batch(3, in, tg);
  z.zero_grad();
  z.forward_backward(in.data(), tg.data(), k_b, k_t, 1.0f);
  const auto stats = z.model().moe_stats();
  REQUIRE(stats.size() == 2);
  CHECK(stats[0].counts[2] == k_b * k_t);  // every token's choices include expert 2
  const std::vector<double> counts0(stats[0].counts.begin(), stats[0].counts.end());
  const std::vector<double> counts1(stats[1].counts.begin(), stats[1].counts.end());
  z.reduce_gradients();
  z.step(0.0, 1, 1.0f);
  std::vector<float> after(layout.total);
  z.export_state(after.data(), nullptr, nullptr);
  const double mean = double(k_b * k_t) * 2 / 4;
  for (int e = 0; e < 4; ++e) {
    CAPTURE(e);
    const auto sign = [](double d) { return d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0; };
    CHECK(after[b0 + std::size_t(e)] ==
          float(init[b0 + std::size_t(e)] + 0.05 * sign(mean - counts0[std::size_t(e)])));
    CHECK(after[b1 + std::size_t(e)] == float(0.05 * sign(mean - counts1[std::size_t(e)])));
  }
  // With the weights frozen (lr 0), the bias alone brings a layer whose router favours one
  // expert to balance: the favoured expert's bias falls until others take its tokens. Loads
  // averaged over the last 100 of 300 steps (the sign rule keeps moving by the rate).
  std::vector<double> load(8, 0.0);
  for (int s = 2; s <= 300; ++s) {
    z.zero_grad();
    z.forward_backward(in.data(), tg.data(), k_b, k_t, 1.0f);
    if (s > 200)
      for (auto& st : z.model().moe_stats())
        for (int e = 0; e < 4; ++e) load[std::size_t(st.layer * 4 + e)] += st.counts[e] / 100.0;
    z.reduce_gradients();
    z.step(0.0, s, 1.0f);
  }
  CAPTURE(load);
  for (double c : load) CHECK(c <= 1.25 * mean);  // from 2 x the mean (expert 2 in every choice)
  // Weights frozen: everything but the biases is where it started.
  z.export_state(after.data(), nullptr, nullptr);
  for (auto& p : layout.params)
    if (!p.name.ends_with("router.bias"))
      for (std::size_t i = 0; i < p.numel; i += 97)
        CHECK(after[p.offset + i] == init[p.offset + i]);
}

TEST_CASE(
    "moe routing: score and forward_rl route dropless as serving does, forward with eval "
    "capacity") {
  auto m = tiny(false);
  m.moe.dropless = false;
  m.moe.eval_capacity_factor = 0.25;  // an expert takes a quarter of its fair share: drops
  m.moe.min_capacity = 1;
  model_run capped(m);
  m.moe.dropless = true;
  model_run free(m);
  std::copy_n(capped.model.params().data(), capped.model.layout().total,
              free.model.params().data());
  std::vector<int> in, tg;
  batch(4, in, tg);
  const std::size_t n = in.size();
  std::vector<float> a(n), b(n), c(n), ent(n);
  capped.model.score(in.data(), tg.data(), k_b, k_t, a.data());
  free.model.score(in.data(), tg.data(), k_b, k_t, b.data());
  CHECK(a == b);
  capped.model.forward_rl(in.data(), tg.data(), k_b, k_t, c.data(), ent.data(), nullptr);
  CHECK(c == b);
  const float lc = capped.model.forward(in.data(), tg.data(), k_b, k_t);
  int dropped = 0;
  for (auto& st : capped.model.moe_stats()) dropped += st.dropped;
  CHECK(dropped > 0);  // evaluation keeps its capacity
  CHECK(lc != free.model.forward(in.data(), tg.data(), k_b, k_t));
}

TEST_CASE(
    "moe routing: forward_rl with an aux scale makes backward_rl add the auxiliary gradients") {
  auto m = tiny(true);
  m.moe.aux_loss_coef = 0.5;
  m.moe.z_loss_coef = 0.1;
  model_run r(m);
  std::vector<int> in, tg;
  batch(5, in, tg);
  const std::size_t n = in.size();
  std::vector<float> lp(n), zero(n, 0.0f);
  const param_info& w = r.param("layers.1.mlp.router.weight");
  auto router_grad = [&](float aux_scale) {
    r.model.zero_grad();
    r.model.forward_rl(in.data(), tg.data(), k_b, k_t, lp.data(), nullptr, nullptr, aux_scale);
    r.model.backward_rl(in.data(), tg.data(), zero.data(), nullptr);  // no policy gradient
    return std::vector<float>(r.model.grads().data() + w.offset,
                              r.model.grads().data() + w.offset + w.numel);
  };
  for (float g : router_grad(0.0f)) CHECK(g == 0.0f);  // without a scale: nothing
  const auto g = router_grad(0.5f);
  float gmax = 0;
  for (float x : g) gmax = std::max(gmax, std::abs(x));
  CHECK(gmax > 1e-4f);
  // 0.5 x d(0.5 balance + 0.1 z-loss) / dW by central differences (loads fixed: small steps).
  auto aux = [&] {
    r.model.forward_rl(in.data(), tg.data(), k_b, k_t, lp.data(), nullptr, nullptr);
    return 0.5 * r.model.moe_balance_loss() + 0.1 * r.model.moe_z_loss();
  };
  int checked = 0;
  for (std::size_t i = 0; i < w.numel; i += w.numel / 7 + 1, ++checked) {
    CAPTURE(i);
    float& x = r.model.params().data()[w.offset + i];
    const float keep = x, h = 1e-3f;
    x = keep + h;
    const double up = aux();
    x = keep - h;
    const double down = aux();
    x = keep;
    const double fd = 0.5 * (up - down) / (2.0 * h);
    CHECK(std::abs(fd - g[i]) <= 0.02 * std::abs(fd) + 1e-5);
  }
  CHECK(checked >= 7);
}
