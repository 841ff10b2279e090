// Fine-tuning from Hugging Face folders (tests/golden/hf/tiny-gpt2, tiny-llama) against the
// fp32 PyTorch twin (tests/golden/gen_finetune_golden.py -> hf/finetune.safetensors): the loaded
// weights train 10 AdamW steps to the twin's losses and parameters, and the fine-tuned model,
// saved and exported back to Hugging Face layout, is read by the twin to the same logits and by
// our own loader to the same bits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/adamw.hpp"
#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/optim.hpp"
#include "storage/checkpoint.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
namespace st = zf::storage;

namespace {

const std::string k_hf = ZF_SOURCE_DIR "/tests/golden/hf/";

struct finetune_golden {
  st::safetensors_file f = st::safetensors_file::open(k_hf + "finetune.safetensors");
  zf::run_config t;
  int B = 0, T = 0, steps = 0;
  finetune_golden() {
    auto& md = f.metadata();
    B = std::stoi(md.at("B"));
    T = std::stoi(md.at("T"));
    steps = std::stoi(md.at("steps"));
    zf::testing::read_train_metadata(md, t);
  }
  // batch s of model m: inputs/targets [B, T]
  void batch(const std::string& m, int s, std::vector<int>& in, std::vector<int>& tg) const {
    const auto ids = f.to_i32(m + ".ids");
    in.clear();
    tg.clear();
    for (int b = 0; b < B; ++b) {
      const int* row = ids.data() + (std::size_t(s) * B + b) * (T + 1);
      in.insert(in.end(), row, row + T);
      tg.insert(tg.end(), row + 1, row + T + 1);
    }
  }
};

// Loads the fixture, trains the golden's 10 steps; returns the model after them.
zf::transformer finetune(const finetune_golden& g, const std::string& m, const std::string& dir) {
  zf::hf_model hf = zf::load_hf_model(k_hf + dir);
  zf::transformer model(hf.spec);
  REQUIRE(hf.flat.size() == model.layout().total);
  std::memcpy(model.params().data(), hf.flat.data(), hf.flat.size() * sizeof(float));
  zf::adamw opt(model.layout(), 0, model.layout().total, g.t.optimizer);
  const auto losses = g.f.to_f32(m + ".train_losses");
  std::vector<int> in, tg;
  for (int s = 0; s < g.steps; ++s) {
    g.batch(m, s, in, tg);
    model.zero_grad();
    const float loss = model.forward_backward(in.data(), tg.data(), g.B, g.T);
    if (s == 0) {
      model.forward(in.data(), nullptr, g.B, g.T);
      const double e = zf::testing::rel_diff(model.logits(), g.f.to_f32(m + ".logits0"));
      MESSAGE(m << ": initial logits rel err " << e);
      CHECK(e < 1e-5);
    }
    CAPTURE(s);
    CHECK(std::abs(loss - losses[s]) <= 1e-5 * std::abs(losses[s]));
    const double n =
        std::sqrt(zf::kernels::sum_squares(model.grads().data(), model.layout().total));
    opt.step(model.params().data(), model.grads().data(), zf::lr_at(g.t, s), s + 1,
             zf::clip_coefficient(n, g.t.optimizer.grad_clip));
  }
  return model;
}

}  // namespace

TEST_CASE("fine-tune: HF GPT-2 and Llama folders train 10 steps as the twin does") {
  finetune_golden g;
  for (auto [m, dir] : {std::pair{"gpt2", "tiny-gpt2"}, std::pair{"llama", "tiny-llama"}}) {
    CAPTURE(m);
    zf::transformer model = finetune(g, m, dir);
    double worst = 0;
    for (auto& p : model.layout().params) {
      auto ref = g.f.to_f32(std::string(m) + ".final." + p.name);
      std::vector<float> ours(model.params().data() + p.offset,
                              model.params().data() + p.offset + p.numel);
      if (p.name.ends_with("attn.c_attn.bias")) {  // GPT-2's key bias: see test_model.cpp
        const int C = model.spec().hidden;
        std::fill(ref.begin() + C, ref.begin() + 2 * C, 0.0f);
        std::fill(ours.begin() + C, ours.begin() + 2 * C, 0.0f);
      }
      const double e = zf::testing::rel_diff(ours.data(), ref);
      worst = std::max(worst, e);
      INFO(p.name << " rel err " << e);
      CHECK(e < 1e-4);
    }
    MESSAGE(std::string(m) << ": worst final parameter rel err " << worst);
  }
}

TEST_CASE("fine-tune: the exported Llama reads back bit-exact and the twin gives its logits") {
  finetune_golden g;
  zf::transformer model = finetune(g, "llama", "tiny-llama");
  zf::testing::temp_dir dir("ft-export");
  zf::run_config rc;
  rc.model = zf::config_of(model.spec());
  rc.train.seq_len = 16;
  st::checkpoint_view v;
  v.step = g.steps;
  v.config_toml = zf::to_toml(rc);
  v.layout = &model.layout();
  v.params = model.params().data();
  const fs::path ck = st::save_checkpoint(dir / "run", v);
  const fs::path file = dir / "hf" / "model.safetensors";
  st::export_safetensors(ck, file);

  // Our loader (as serve --hf and --init-hf use it) gets the same bits back.
  zf::hf_model back = zf::load_hf_model(dir / "hf");
  REQUIRE(back.flat.size() == model.layout().total);
  CHECK(std::memcmp(back.flat.data(), model.params().data(), back.flat.size() * 4) == 0);
  CHECK(back.spec.n_kv_head == model.spec().n_kv_head);
  CHECK(back.spec.tied_head == model.spec().tied_head);

  // The twin reads the export to the golden's logits of the fine-tuned model.
  std::vector<int> in, tg;
  g.batch("llama", 0, in, tg);
  const std::vector<int> row0(in.begin(), in.begin() + g.T);
  const auto twin = zf::testing::twin_logits_of_export(file.string(), row0);
  if (twin.empty()) {
    MESSAGE("SKIPPED: /usr/bin/python3 cannot import torch; the twin's read-back not checked");
    return;
  }
  const auto golden = g.f.to_f32("llama.final_logits");  // [B, T, V]
  const std::size_t V = model.spec().vocab_size;
  REQUIRE(twin.size() == std::size_t(g.T));
  double num = 0, den = 0;
  for (std::size_t t = 0; t < twin.size(); ++t)
    for (std::size_t i = 0; i < V; ++i) {
      num = std::max(num, std::abs(twin[t][i] - golden[t * V + i]));
      den = std::max(den, std::abs(double(golden[t * V + i])));
    }
  MESSAGE("twin on the export vs golden fine-tuned logits: rel " << num / den);
  CHECK(num / den < 1e-4);
}
