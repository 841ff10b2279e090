// Mixture-of-Experts parity with the PyTorch twin (tests/golden/gen_moe_golden.py, the math in
// docs/moe.md): top-1 with capacity drops, top-2 dropless (Llama), PR-MoE (residual MLP, 2 then 4
// experts, top-2 with capacity) and a sigmoid router on every other layer: logits (evaluation
// capacity), cross-entropy, balance and z-losses, routing counts and drops, every gradient of the
// total loss, and 10 AdamW steps.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>
#include <string>

#include "kernels/adamw.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/optim.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

namespace {

const char* const k_moe_files[] = {
    ZF_SOURCE_DIR "/tests/golden/moe_gpt2_top1.safetensors",
    ZF_SOURCE_DIR "/tests/golden/moe_llama_top2_dropless.safetensors",
    ZF_SOURCE_DIR "/tests/golden/moe_gpt2_prmoe.safetensors",
    ZF_SOURCE_DIR "/tests/golden/moe_llama_sigmoid_interval2.safetensors",
};

// A golden file: the model config (with model.moe.*) from its metadata, batches and numbers.
struct moe_golden {
  zf::storage::safetensors_file f;
  zf::model_config m;
  zf::run_config t;
  int B = 0, T = 0, steps = 0;
  std::vector<int> ids;  // [steps, B, T+1]
  explicit moe_golden(const char* path) : f(zf::storage::safetensors_file::open(path)) {
    auto& md = f.metadata();
    auto i = [&](const char* k) { return std::stoi(md.at(k)); };
    auto d = [&](const char* k) { return std::stod(md.at(k)); };
    m.arch = md.at("arch");
    m.n_layer = i("n_layer");
    m.n_head = i("n_head");
    m.n_embd = i("n_embd");
    m.vocab_size = i("vocab_size");
    m.n_positions = i("n_positions");
    if (m.arch == "llama") {
      m.n_kv_head = i("n_kv_head");
      m.head_dim = i("head_dim");
      m.intermediate = i("intermediate");
      m.norm_eps = d("norm_eps");
      m.rope_theta = d("rope_theta");
      m.rope_type = md.at("rope_type");
      m.rope_factor = d("rope_factor");
      m.rope_low_freq_factor = d("rope_low_freq_factor");
      m.rope_high_freq_factor = d("rope_high_freq_factor");
      m.rope_original_max_positions = i("rope_original_max_positions");
      m.tied_head = i("tied") != 0;
    }
    zf::moe_config& e = m.moe;
    e.num_experts = i("moe_num_experts");
    e.top_k = i("moe_top_k");
    e.interval = i("moe_interval");
    std::stringstream counts(md.at("moe_layer_experts"));
    for (std::string s; std::getline(counts, s, ',');)
      if (!s.empty()) e.layer_experts.push_back(std::stoi(s));
    e.expert_intermediate = i("moe_expert_intermediate");
    e.capacity_factor = d("moe_capacity_factor");
    e.eval_capacity_factor = d("moe_eval_capacity_factor");
    e.min_capacity = i("moe_min_capacity");
    e.dropless = i("moe_dropless") != 0;
    e.router = md.at("moe_router");
    e.norm_topk = i("moe_norm_topk") != 0;
    e.residual = i("moe_residual") != 0;
    e.aux_loss_coef = d("moe_aux_loss_coef");
    e.z_loss_coef = d("moe_z_loss_coef");
    B = i("B");
    T = i("T");
    steps = i("steps");
    zf::testing::read_train_metadata(md, t);
    t.model = m;
    t.train.seq_len = T;
    zf::validate(t);  // the file's config is one a user could write
    ids = f.to_i32("input_ids");
  }
  void load_weights(zf::transformer& model) const {
    for (auto& p : model.layout().params) {
      auto v = f.to_f32(p.name);
      REQUIRE(v.size() == p.numel);
      std::copy(v.begin(), v.end(), model.params().data() + p.offset);
    }
  }
  void batch(int s, std::vector<int>& in, std::vector<int>& tg) const {
    in.clear();
    tg.clear();
    for (int b = 0; b < B; ++b) {
      const int* row = ids.data() + (std::size_t(s) * B + b) * (T + 1);
      in.insert(in.end(), row, row + T);
      tg.insert(tg.end(), row + 1, row + T + 1);
    }
  }
};

bool close(double a, double b, double rel) {
  return std::abs(a - b) <= rel * std::abs(b);
}

}  // namespace

TEST_CASE("moe model: evaluation logits equal the PyTorch twin") {
  for (const char* path : k_moe_files) {
    CAPTURE(std::string(path));
    moe_golden g(path);
    zf::transformer model(g.m);
    g.load_weights(model);
    std::vector<int> in, tg;
    g.batch(0, in, tg);
    model.forward(in.data(), tg.data(), g.B, g.T);
    const double e = zf::testing::rel_diff(model.logits(), g.f.to_f32("eval_logits"));
    MESSAGE("eval logits max rel err " << e);
    CHECK(e < 1e-5);
  }
}

TEST_CASE("moe model: losses, routing and every gradient equal the PyTorch twin") {
  for (const char* path : k_moe_files) {
    CAPTURE(std::string(path));
    moe_golden g(path);
    zf::transformer model(g.m);
    g.load_weights(model);
    std::vector<int> in, tg;
    g.batch(0, in, tg);
    model.zero_grad();
    const float loss = model.forward_backward(in.data(), tg.data(), g.B, g.T);
    CHECK(close(loss, g.f.to_f32("loss")[0], 1e-5));
    CHECK(close(model.moe_balance_loss(), g.f.to_f32("aux_loss")[0], 1e-5));
    CHECK(close(model.moe_z_loss(), g.f.to_f32("z_loss")[0], 1e-5));
    // Routing: choices per expert before drops, and the drops, layer by layer.
    const auto stats = model.moe_stats();
    const auto counts = g.f.to_f32("route.counts");
    const auto dropped = g.f.to_f32("route.dropped");
    REQUIRE(dropped.size() == stats.size());
    const std::size_t width = counts.size() / stats.size();
    for (std::size_t l = 0; l < stats.size(); ++l) {
      CAPTURE(l);
      CHECK(stats[l].dropped == int(dropped[l]));
      CHECK(stats[l].tokens == g.B * g.T);
      for (std::size_t e = 0; e < stats[l].counts.size(); ++e)
        CHECK(stats[l].counts[e] == int(counts[l * width + e]));
    }
    for (auto& p : model.layout().params) {
      const double e =
          zf::testing::rel_diff(model.grads().data() + p.offset, g.f.to_f32("grad." + p.name));
      INFO(p.name << " rel err " << e);
      CHECK(e < 1e-4);
    }
  }
}

TEST_CASE("moe model: 10 AdamW steps on the total loss equal the PyTorch twin") {
  for (const char* path : k_moe_files) {
    CAPTURE(std::string(path));
    moe_golden g(path);
    const auto ref_losses = g.f.to_f32("train_losses");
    const auto ref_aux = g.f.to_f32("train_aux_losses");
    zf::transformer model(g.m);
    g.load_weights(model);
    zf::adamw opt(model.layout(), 0, model.layout().total, g.t.optimizer);
    std::vector<int> in, tg;
    for (int s = 0; s < g.steps; ++s) {
      model.zero_grad();
      g.batch(s, in, tg);
      const float loss = model.forward_backward(in.data(), tg.data(), g.B, g.T);
      const double norm =
          std::sqrt(zf::kernels::sum_squares(model.grads().data(), model.layout().total));
      opt.step(model.params().data(), model.grads().data(), zf::lr_at(g.t, s), s + 1,
               zf::clip_coefficient(norm, g.t.optimizer.grad_clip));
      INFO("step " << s << " loss " << loss << " ref " << ref_losses[s]);
      CHECK(close(loss, ref_losses[s], 2e-5));
      CHECK(close(model.moe_balance_loss(), ref_aux[s], 2e-5));
    }
    double worst = 0;
    for (auto& p : model.layout().params) {
      auto ref = g.f.to_f32("final." + p.name);
      std::vector<float> ours(model.params().data() + p.offset,
                              model.params().data() + p.offset + p.numel);
      if (p.name.ends_with("attn.c_attn.bias")) {  // the key bias: see test_model.cpp
        const int C = g.m.n_embd;
        std::fill(ref.begin() + C, ref.begin() + 2 * C, 0.0f);
        std::fill(ours.begin() + C, ours.begin() + 2 * C, 0.0f);
      }
      const double e = zf::testing::rel_diff(ours.data(), ref);
      worst = std::max(worst, e);
      INFO(p.name << " final rel err " << e);
      // 2e-4: an entry whose gradient hovers near zero (PR-MoE's h.0.mlp.c_proj.weight[770]
      // moves 6e-4 in 10 steps) has its rounding noise turned into full Adam steps, as the dense
      // GPT-2 test explains; everything else agrees to 1e-5.
      CHECK(e < 2e-4);
    }
    MESSAGE("after " << g.steps << " steps, worst parameter rel err " << worst);
  }
}
