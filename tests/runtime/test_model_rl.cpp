// The model's RL mode (forward_rl / backward_rl): the log-probs are score mode's bits, the
// policy-gradient backward with dlogp = -1/valid is the cross-entropy backward that the PyTorch
// twin checks (test_model.cpp), and the value head's gradients match finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/model/model.hpp"

using namespace zf;

namespace {

model_config tiny(const char* arch, bool value_head) {
  model_config m;
  m.arch = arch;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 16;
  m.n_positions = 12;
  m.vocab_size = 23;
  m.value_head = value_head;
  return m;
}

struct batch {
  int b = 2, t = 6;
  std::vector<int> ids, targets;
  batch() {
    std::mt19937 g(5);
    for (int i = 0; i < b * t; ++i) {
      ids.push_back(static_cast<int>(g() % 23));
      targets.push_back(i % t < 2 ? -1 : static_cast<int>(g() % 23));  // prompt rows masked
    }
  }
};

void randomize_value_head(transformer& m, uint64_t seed) {
  std::mt19937 g(static_cast<unsigned>(seed));
  std::normal_distribution<float> n(0, 0.5f);
  float* v = m.param("v_head.weight");
  for (int i = 0; i < m.spec().hidden; ++i) v[i] = n(g);
}

}  // namespace

TEST_CASE("model rl: forward_rl log-probs are score mode's bits, entropies from the logits") {
  for (const char* arch : {"gpt2", "llama"}) {
    transformer m(tiny(arch, false));
    m.init_weights(3);
    batch x;
    const int BT = x.b * x.t, V = 23;
    std::vector<float> lp(BT), ent(BT), ref(BT);
    m.score(x.ids.data(), x.targets.data(), x.b, x.t, ref.data());
    m.forward_rl(x.ids.data(), x.targets.data(), x.b, x.t, lp.data(), ent.data(), nullptr);
    CHECK(std::memcmp(lp.data(), ref.data(), lp.size() * sizeof(float)) == 0);
    m.forward(x.ids.data(), nullptr, x.b, x.t);
    for (int i = 0; i < BT; ++i) {
      if (x.targets[i] < 0) {
        CHECK(ent[i] == 0.0f);
        continue;
      }
      const float* row = m.logits() + std::size_t(i) * V;
      double mx = row[0], z = 0, h = 0;
      for (int v = 1; v < V; ++v) mx = std::max<double>(mx, row[v]);
      for (int v = 0; v < V; ++v) z += std::exp(row[v] - mx);
      for (int v = 0; v < V; ++v) {
        const double p = std::exp(row[v] - mx) / z;
        h -= p * std::log(p);
      }
      CHECK(ent[i] == doctest::Approx(h).epsilon(1e-5));
    }
  }
}

TEST_CASE("model rl: backward_rl with dlogp = -1/valid is the cross-entropy gradient") {
  for (const char* arch : {"gpt2", "llama"}) {
    batch x;
    transformer a(tiny(arch, false)), b(tiny(arch, false));
    a.init_weights(7);
    b.init_weights(7);
    a.zero_grad();
    b.zero_grad();
    const float loss = a.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t);
    const int BT = x.b * x.t;
    std::vector<float> lp(BT), dlogp(BT, 0.0f);
    int valid = 0;
    for (int t : x.targets) valid += t >= 0;
    b.forward_rl(x.ids.data(), x.targets.data(), x.b, x.t, lp.data(), nullptr, nullptr);
    double nll = 0;
    for (int i = 0; i < BT; ++i)
      if (x.targets[i] >= 0) {
        nll -= lp[i];
        dlogp[i] = -1.0f / valid;
      }
    CHECK(nll / valid == doctest::Approx(loss).epsilon(1e-5));
    b.backward_rl(x.ids.data(), x.targets.data(), dlogp.data(), nullptr);
    double max_diff = 0, max_abs = 0;
    for (std::size_t i = 0; i < a.grads().size(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(a.grads()[i] - b.grads()[i])));
      max_abs = std::max(max_abs, double(std::fabs(a.grads()[i])));
    }
    INFO(arch << " max |diff| " << max_diff << " of max |g| " << max_abs);
    CHECK(max_abs > 1e-3);
    CHECK(max_diff < 1e-5 * max_abs + 1e-8);
  }
}

// L = sum_i dlogp_i logp_i + sum_i dvalue_i value_i, checked against central differences on a
// sample of parameters (every tensor's first float, and the value head's).
TEST_CASE("model rl: policy and value gradients match finite differences") {
  for (const char* arch : {"gpt2", "llama"}) {
    for (bool lm : {true, false}) {
      batch x;
      transformer m(tiny(arch, true));
      m.init_weights(11);
      randomize_value_head(m, 4);
      const int BT = x.b * x.t;
      std::vector<float> dlogp(BT), dvalue(BT), lp(BT), val(BT);
      std::mt19937 g(9);
      std::normal_distribution<float> n(0, 1);
      for (int i = 0; i < BT; ++i) {
        dlogp[i] = lm && x.targets[i] >= 0 ? n(g) : 0.0f;
        dvalue[i] = n(g);
      }
      auto objective = [&] {
        m.forward_rl(x.ids.data(), x.targets.data(), x.b, x.t, lm ? lp.data() : nullptr, nullptr,
                     val.data());
        double s = 0;
        for (int i = 0; i < BT; ++i) s += double(dlogp[i]) * (lm ? lp[i] : 0) + dvalue[i] * val[i];
        return s;
      };
      m.zero_grad();
      objective();
      m.backward_rl(x.ids.data(), x.targets.data(), lm ? dlogp.data() : nullptr, dvalue.data());
      std::vector<float> grad(m.grads().data(), m.grads().data() + m.grads().size());
      // Per tensor, the directional derivative along a random direction d over all its floats:
      // (L(w + h d) - L(w - h d)) / 2h against grad . d (one float alone drowns in rounding).
      int checked = 0;
      for (auto& p : m.layout().params) {
        float* w = m.params().data() + p.offset;
        std::vector<float> keep(w, w + p.numel), d(p.numel);
        double an = 0;
        for (std::size_t j = 0; j < p.numel; ++j) {
          d[j] = n(g);
          an += double(grad[p.offset + j]) * d[j];
        }
        const float h = 1e-3f;
        for (std::size_t j = 0; j < p.numel; ++j) w[j] = keep[j] + h * d[j];
        const double up = objective();
        for (std::size_t j = 0; j < p.numel; ++j) w[j] = keep[j] - h * d[j];
        const double down = objective();
        std::copy(keep.begin(), keep.end(), w);
        const double fd = (up - down) / (2 * h);
        INFO(arch << (lm ? " lm+value " : " value only ") << p.name << ": fd " << fd << " analytic "
                  << an);
        CHECK(an == doctest::Approx(fd).epsilon(2e-2).scale(1e-2));
        ++checked;
      }
      CHECK(checked > 10);
      CHECK(std::fabs(grad[m.layout().at("v_head.weight").offset]) > 1e-4);
    }
  }
}

TEST_CASE("model rl: values need a value head, the head is a named parameter") {
  transformer m(tiny("gpt2", false));
  m.init_weights(1);
  batch x;
  std::vector<float> v(x.b * x.t);
  CHECK_THROWS_WITH(m.forward_rl(x.ids.data(), nullptr, x.b, x.t, nullptr, nullptr, v.data()),
                    doctest::Contains("no value head"));
  transformer r(tiny("llama", true));
  CHECK(r.layout().at("v_head.weight").numel == 16);
  CHECK(r.layout().total == transformer(tiny("llama", false)).layout().total + 16);
}
