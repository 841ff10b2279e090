// random-LTD in the model's train mode (runtime/model/token_drop, forward_backward's drop): with
// every token kept it is the plain model bit for bit; with fewer its loss and gradients equal the
// PyTorch twin of the gather / scatter (tests/golden/gen_ltd_golden.py -> ltd_small.safetensors)
// and central finite differences; ZeRO's region accesses are the plain path's; the kept positions
// are drawn reproducibly and uniformly; bad requests are refused up front by key.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "runtime/model/model.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

using namespace zf;

namespace {

const char* k_golden = ZF_SOURCE_DIR "/tests/golden/ltd_small.safetensors";

// 3 layers so that a middle layer exists; Llama with GQA (4 query heads on 2 kv heads).
model_config tiny(const char* arch, bool tied) {
  model_config m;
  m.arch = arch;
  m.n_layer = 3;
  m.n_head = 4;
  m.n_embd = 16;
  m.n_positions = 16;
  m.vocab_size = 29;
  m.tied_head = tied;
  if (m.arch == "llama") {
    m.n_kv_head = 2;
    m.intermediate = 24;
  }
  return m;
}

const model_config k_models[] = {tiny("gpt2", true), tiny("llama", false), tiny("llama", true)};

// Weights of the twins' scale (matrices N(0, 0.1), norm weights 1 + N(0, 0.1), biases
// N(0, 0.05)): init_weights' 0.02 leaves gradients too small for finite differences.
void randomize(transformer& m, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0, 1);
  for (auto& p : m.layout().params) {
    float* w = m.params().data() + p.offset;
    const bool norm_w = p.shape.size() == 1 && p.name.ends_with(".weight");
    for (std::size_t i = 0; i < p.numel; ++i)
      w[i] = p.shape.size() == 2 ? 0.1f * n(g) : norm_w ? 1 + 0.1f * n(g) : 0.05f * n(g);
  }
}

struct batch {
  int b = 2, t = 7;
  std::vector<int> ids, targets;
  explicit batch(int vocab, unsigned seed = 3) {
    std::mt19937 g(seed);
    for (int i = 0; i < b * t; ++i) {
      ids.push_back(static_cast<int>(g() % vocab));
      targets.push_back(i == 4 ? -1 : static_cast<int>(g() % vocab));  // one ignored target
    }
  }
};

struct result {
  float loss = 0;
  std::vector<float> grads;
};

result run(transformer& m, const batch& x, const token_drop* d, float scale = 1.0f) {
  m.zero_grad();
  result r;
  r.loss = m.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t, scale, d);
  r.grads.assign(m.grads().data(), m.grads().data() + m.grads().size());
  return r;
}

bool same_bits(const result& a, const result& b) {
  return std::memcmp(&a.loss, &b.loss, sizeof(float)) == 0 && a.grads.size() == b.grads.size() &&
         std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)) == 0;
}

// The twin's file: per prefix ("gpt2/", "llama/") the model, batch, kept positions, loss and
// gradients.
struct golden_model {
  model_config m;
  int B = 0, T = 0;
  token_drop drop;
  std::vector<int> ids;  // [B, T+1]
};

golden_model read_golden(const storage::safetensors_file& f, const std::string& p) {
  auto& md = f.metadata();
  auto i = [&](const std::string& k) { return std::stoi(md.at(p + k)); };
  golden_model g;
  g.m.arch = md.at(p + "arch");
  g.m.n_layer = i("n_layer");
  g.m.n_head = i("n_head");
  g.m.n_embd = i("n_embd");
  g.m.vocab_size = i("vocab_size");
  g.m.n_positions = i("n_positions");
  if (g.m.arch == "llama") {
    g.m.n_kv_head = i("n_kv_head");
    g.m.head_dim = i("head_dim");
    g.m.intermediate = i("intermediate");
    g.m.norm_eps = std::stod(md.at(p + "norm_eps"));
    g.m.rope_theta = std::stod(md.at(p + "rope_theta"));
    g.m.rope_type = md.at(p + "rope_type");
    g.m.tied_head = i("tied") != 0;
  }
  g.B = i("B");
  g.T = i("T");
  g.drop.keep = i("keep");
  const std::string layers = md.at(p + "layers");
  for (std::size_t s = 0; s < layers.size();) {
    std::size_t e = layers.find(',', s);
    if (e == std::string::npos) e = layers.size();
    g.drop.layers.push_back(std::stoi(layers.substr(s, e - s)));
    s = e + 1;
  }
  auto kept = f.to_i32(p + "kept");
  g.drop.kept.assign(kept.begin(), kept.end());
  auto ids = f.to_i32(p + "input_ids");
  g.ids.assign(ids.begin(), ids.end());
  return g;
}

// Logs every acquire (+) and release (-) of a region, serving the model's own buffers.
struct recorder : region_access {
  float* base;
  const transformer& m;
  char tag;
  std::vector<std::string>& log;
  recorder(float* b, const transformer& model, char t, std::vector<std::string>& l)
      : base(b), m(model), tag(t), log(l) {}
  float* acquire(int r) override {
    log.push_back(fmt::format("{}+{}", tag, r));
    return base + m.regions()[r].begin;
  }
  void release(int r) override { log.push_back(fmt::format("{}-{}", tag, r)); }
};

}  // namespace

TEST_CASE("random ltd: every token kept in every layer is the plain model bit for bit") {
  for (const model_config& mc : k_models) {
    CAPTURE(mc.arch);
    CAPTURE(mc.tied_head);
    transformer m(mc);
    randomize(m, 7);
    const batch x(mc.vocab_size);
    const result plain = run(m, x, nullptr, 0.5f);
    const std::size_t act = m.activation_bytes();
    token_drop all;  // drawn: keep == t draws every position, the gather path still runs
    all.layers = {0, 1, 2};
    all.keep = x.t;
    all.seed = 99;
    const result drawn = run(m, x, &all, 0.5f);
    CHECK(same_bits(plain, drawn));
    all.kept.resize(std::size_t(3) * x.b * x.t);  // explicit identity positions
    for (std::size_t i = 0; i < all.kept.size(); ++i) all.kept[i] = int(i % x.t);
    const result explicit_kept = run(m, x, &all, 0.5f);
    CHECK(same_bits(plain, explicit_kept));
    token_drop none;  // no layers: nothing drops
    none.keep = 0;
    CHECK(same_bits(plain, run(m, x, &none, 0.5f)));
    CHECK(m.activation_bytes() == act);  // no extra activation memory
    CHECK(plain.loss > 0);
  }
}

TEST_CASE("random ltd: dropping changes the loss and leaves no state behind") {
  for (const model_config& mc : k_models) {
    CAPTURE(mc.arch);
    const batch x(mc.vocab_size);
    transformer fresh(mc), m(mc);
    randomize(fresh, 7);
    randomize(m, 7);
    const result plain = run(fresh, x, nullptr);
    const float eval = fresh.forward(x.ids.data(), x.targets.data(), x.b, x.t);
    std::vector<float> logits(fresh.logits(),
                              fresh.logits() + std::size_t(x.b) * x.t * mc.vocab_size);
    token_drop d;
    d.layers = {1};
    d.keep = 3;
    d.seed = 5;
    const result dropped = run(m, x, &d);
    CHECK(dropped.loss != plain.loss);
    CHECK(dropped.grads != plain.grads);
    // Layer 1 still learns, from its kept rows.
    const param_info& qkv = m.layout().at(mc.arch == "gpt2" ? "h.1.attn.c_attn.weight"
                                                            : "layers.1.self_attn.qkv_proj.weight");
    double norm = 0;
    for (std::size_t i = 0; i < qkv.numel; ++i) norm += std::abs(dropped.grads[qkv.offset + i]);
    CHECK(norm > 0);
    // The next plain call, and eval mode, are the fresh model's bits.
    CHECK(same_bits(run(m, x, nullptr), plain));
    CHECK(m.forward(x.ids.data(), x.targets.data(), x.b, x.t) == eval);
    CHECK(std::memcmp(m.logits(), logits.data(), logits.size() * sizeof(float)) == 0);
    // A drop with a different seed draws other positions: another loss.
    d.seed = 6;
    CHECK(run(m, x, &d).loss != dropped.loss);
    d.seed = 5;
    CHECK(same_bits(run(m, x, &d), dropped));  // and the same seed the same bits
  }
}

TEST_CASE("random ltd: a seed's draw is the draw of draw_kept_positions") {
  const model_config mc = tiny("llama", false);
  transformer m(mc);
  randomize(m, 3);
  const batch x(mc.vocab_size);
  token_drop d;
  d.layers = {0, 2};
  d.keep = 4;
  d.seed = 0x123456789abcdefULL;
  const result drawn = run(m, x, &d);
  token_drop e = d;
  e.kept.resize(std::size_t(2) * x.b * d.keep);
  for (int li = 0; li < 2; ++li)
    for (int r = 0; r < x.b; ++r)
      draw_kept_positions(d.seed, d.layers[li], r, x.t, d.keep,
                          e.kept.data() + (std::size_t(li) * x.b + r) * d.keep);
  CHECK(same_bits(drawn, run(m, x, &e)));
  // Other positions in one row of one layer: other numbers.
  const std::vector<int> first(e.kept.begin(), e.kept.begin() + d.keep), other{0, 1, 2, 3};
  const std::vector<int> alt = first == other ? std::vector<int>{3, 4, 5, 6} : other;
  std::copy(alt.begin(), alt.end(), e.kept.begin());
  CHECK(!same_bits(drawn, run(m, x, &e)));
}

// Per tensor, the directional derivative along a random direction d over all its floats, by the
// fourth-order central difference (8 (L(h) - L(-h)) - (L(2h) - L(-2h))) / 12h with L(s) = the
// loss at w + s d, against grad . d (one float alone drowns in fp32 rounding; the second-order
// stencil's h^2 term needs an h so small that rounding then dominates).
TEST_CASE("random ltd: gradients match central finite differences (GPT-2, Llama GQA)") {
  for (const model_config& mc : {tiny("gpt2", true), tiny("llama", false)}) {
    CAPTURE(mc.arch);
    transformer m(mc);
    randomize(m, 11);
    const batch x(mc.vocab_size, 8);
    token_drop d;  // first and last layer for GPT-2, middle and last for Llama; keep 4 of 7
    d.layers = mc.arch == "gpt2" ? std::vector<int>{0, 2} : std::vector<int>{1, 2};
    d.keep = 4;
    d.kept = {0, 2, 3, 6, 1, 4, 5, 6,   // first dropping layer, rows 0 and 1
              2, 3, 4, 5, 0, 1, 3, 5};  // second
    const result r = run(m, x, &d);
    auto loss = [&] {
      return double(m.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t, 1.0f, &d));
    };
    std::mt19937 g(9);
    std::normal_distribution<float> n(0, 1);
    int checked = 0, big = 0;
    for (auto& p : m.layout().params) {
      float* w = m.params().data() + p.offset;
      std::vector<float> keep(w, w + p.numel), dir(p.numel);
      double an = 0;
      for (std::size_t j = 0; j < p.numel; ++j) {
        dir[j] = n(g);
        an += double(r.grads[p.offset + j]) * dir[j];
      }
      const float h = 3e-3f;
      auto at = [&](float step) {
        for (std::size_t j = 0; j < p.numel; ++j) w[j] = keep[j] + step * dir[j];
        return loss();
      };
      const double fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
      std::copy(keep.begin(), keep.end(), w);
      INFO(p.name << ": fd " << fd << " analytic " << an);
      CHECK(an == doctest::Approx(fd).epsilon(1e-2).scale(1e-2));
      ++checked;
      big += std::abs(an) > 1e-2;
    }
    CHECK(checked == int(m.layout().params.size()));
    CHECK(big > checked / 2);  // the check is not between zeros
  }
}

TEST_CASE("random ltd: loss and every gradient equal the PyTorch twin (GPT-2, Llama GQA)") {
  const auto f = storage::safetensors_file::open(k_golden);
  for (const std::string p : {"gpt2/", "llama/"}) {
    CAPTURE(p);
    const golden_model g = read_golden(f, p);
    REQUIRE(g.drop.kept.size() == g.drop.layers.size() * g.B * g.drop.keep);
    CHECK(g.drop.keep < g.T);
    transformer m(g.m);
    for (auto& par : m.layout().params) {
      auto v = f.to_f32(p + par.name);
      REQUIRE(v.size() == par.numel);
      std::copy(v.begin(), v.end(), m.params().data() + par.offset);
    }
    std::vector<int> in, tg;
    for (int b = 0; b < g.B; ++b) {
      const int* row = g.ids.data() + std::size_t(b) * (g.T + 1);
      in.insert(in.end(), row, row + g.T);
      tg.insert(tg.end(), row + 1, row + g.T + 1);
    }
    m.zero_grad();
    const float loss = m.forward_backward(in.data(), tg.data(), g.B, g.T, 1.0f, &g.drop);
    const float ref_loss = f.to_f32(p + "loss")[0];
    CHECK(std::abs(loss - ref_loss) <= 1e-5 * std::abs(ref_loss));
    for (auto& par : m.layout().params) {
      auto ref = f.to_f32(p + "grad." + par.name);
      const double e = testing::rel_diff(m.grads().data() + par.offset, ref);
      INFO(par.name << " rel err " << e);
      CHECK(e < 1e-4);
    }
    // The twin's numbers are not the plain model's: the drop mattered.
    m.zero_grad();
    CHECK(std::abs(m.forward_backward(in.data(), tg.data(), g.B, g.T) - ref_loss) > 1e-3);
  }
}

TEST_CASE("random ltd: ZeRO region access sees the plain path's acquires and releases") {
  for (const model_config& mc : k_models) {
    CAPTURE(mc.arch);
    transformer m(mc);
    randomize(m, 2);
    const batch x(mc.vocab_size);
    token_drop d;
    d.layers = {0, 1};
    d.keep = 5;
    d.seed = 1;
    const result direct = run(m, x, &d);
    std::vector<std::string> plain_log, drop_log;
    recorder pa(m.params().data(), m, 'p', plain_log), ga(m.grads().data(), m, 'g', plain_log);
    m.set_param_access(&pa);
    m.set_grad_access(&ga);
    run(m, x, nullptr);
    recorder pb(m.params().data(), m, 'p', drop_log), gb(m.grads().data(), m, 'g', drop_log);
    m.set_param_access(&pb);
    m.set_grad_access(&gb);
    const result via_access = run(m, x, &d);
    CHECK(drop_log == plain_log);
    CHECK(drop_log.size() >= 4 * m.regions().size());  // every region acquired and released
    CHECK(same_bits(via_access, direct));
  }
}

TEST_CASE("random ltd: drawn kept positions are sorted, in range, reproducible and uniform") {
  std::vector<int> a(6), b(6);
  draw_kept_positions(42, 3, 1, 16, 6, a.data());
  draw_kept_positions(42, 3, 1, 16, 6, b.data());
  CHECK(a == b);
  // Pinned: a run's random-LTD draw must not change with the code or the standard library.
  CHECK(a == std::vector<int>{0, 7, 10, 13, 14, 15});
  std::set<std::vector<int>> seen;
  for (int layer = 0; layer < 4; ++layer)
    for (int row = 0; row < 4; ++row) {
      draw_kept_positions(42, layer, row, 16, 6, b.data());
      CHECK(std::is_sorted(b.begin(), b.end()));
      CHECK(std::adjacent_find(b.begin(), b.end()) == b.end());
      CHECK(b.front() >= 0);
      CHECK(b.back() < 16);
      seen.insert(b);
    }
  CHECK(seen.size() >= 15);  // layers and rows draw differently (16 draws of C(16,6) = 8008)
  draw_kept_positions(43, 3, 1, 16, 6, b.data());
  CHECK(a != b);  // and seeds
  std::vector<int> all(9);
  draw_kept_positions(1, 0, 0, 9, 9, all.data());
  for (int i = 0; i < 9; ++i) CHECK(all[i] == i);
  // Uniform: each position kept keep/t of the time, and (t = 5, keep = 2) each of the 10
  // subsets a tenth of the time, over 20000 draws (bounds ~6 standard deviations).
  const int n = 20000, t = 16, keep = 5;
  std::vector<int> count(t), out(keep);
  for (int i = 0; i < n; ++i) {
    draw_kept_positions(7, i % 13, i, t, keep, out.data());
    for (int p : out) ++count[p];
  }
  for (int p = 0; p < t; ++p) {
    CAPTURE(p);
    CHECK(std::abs(double(count[p]) / n - double(keep) / t) < 0.02);
  }
  std::vector<int> pair_count(25), two(2);
  for (int i = 0; i < n; ++i) {
    draw_kept_positions(8, 0, i, 5, 2, two.data());
    ++pair_count[two[0] * 5 + two[1]];
  }
  for (int p = 0; p < 5; ++p)
    for (int q = p + 1; q < 5; ++q) {
      CAPTURE(p * 5 + q);
      CHECK(std::abs(double(pair_count[p * 5 + q]) / n - 0.1) < 0.013);
    }
}

TEST_CASE("random ltd: bad requests are refused up front naming the key") {
  const model_config mc = tiny("gpt2", true);
  transformer m(mc);
  randomize(m, 1);
  const batch x(mc.vocab_size);
  auto refuse = [&](token_drop d) {
    m.zero_grad();
    const std::string e = testing::error_of(
        [&] { m.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t, 1.0f, &d); });
    for (float g : std::vector<float>(m.grads().data(), m.grads().data() + m.grads().size()))
      if (g != 0.0f) {
        FAIL_CHECK("gradients touched before the refusal");
        break;
      }
    return e;
  };
  token_drop d;
  d.keep = 3;
  d.layers = {3};
  std::string e = refuse(d);
  CHECK(testing::contains(e, "train.random_ltd.layers"));
  CHECK(testing::contains(e, "layer 3 out of range 0..2"));
  d.layers = {-1};
  CHECK(testing::contains(refuse(d), "layer -1 out of range"));
  d.layers = {2, 1};
  CHECK(testing::contains(refuse(d), "train.random_ltd.layers must be strictly ascending"));
  d.layers = {1, 1};
  CHECK(testing::contains(refuse(d), "strictly ascending"));
  d.layers = {1};
  d.keep = 0;
  e = refuse(d);
  CHECK(testing::contains(e, "train.random_ltd.keep"));
  CHECK(testing::contains(e, "outside 1..7"));
  d.keep = 8;
  CHECK(testing::contains(refuse(d), "train.random_ltd.keep: 8 kept tokens is outside 1..7"));
  d.keep = 2;
  d.kept = {0, 1, 2};  // wants 1 layer x 2 rows x 2
  CHECK(testing::contains(refuse(d), "3 explicit kept positions, want 4"));
  d.kept = {0, 1, 2, 7};
  CHECK(testing::contains(refuse(d), "explicit kept position 7 (layer 1, row 1) is out of range"));
  d.kept = {0, 1, -1, 3};
  CHECK(testing::contains(refuse(d), "explicit kept position -1"));
  d.kept = {0, 1, 3, 3};
  CHECK(testing::contains(refuse(d), "layer 1, row 1 are not strictly increasing (3 after 3)"));
  d.kept = {2, 1, 3, 4};
  CHECK(testing::contains(refuse(d), "row 0 are not strictly increasing"));
  d.kept = {1, 2, 3, 4};  // valid again: runs
  m.zero_grad();
  CHECK(m.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t, 1.0f, &d) > 0);
}
