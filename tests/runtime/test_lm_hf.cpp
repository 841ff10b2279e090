// Hugging Face models through the serving forward: a seeded tiny Llama (BF16, GQA, RoPE,
// SwiGLU, untied head), the same as Llama 3.1/3.2 (llama3 rope_scaling, tied head) and GPT-2
// written by the PyTorch twin (tests/golden/gen_hf.py, float64) give the twin's logits at every
// position, by paged token-by-token decoding and by one whole-prompt prefill; greedy
// continuation equals the twin's. A seeded tiny Mixtral (tests/golden/gen_hf_mixtral.py) the same.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "runtime/model/model_paged.hpp"
#include "runtime/serve/sampling.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

using namespace zf;

using zf::testing::rel_diff;

namespace {

const std::string k_dir = ZF_SOURCE_DIR "/tests/golden/hf/";

// Worst relative logit difference to the twin over every position of prompt p of `name`,
// decoding token by token.
double worst_decode_diff(const lm_weights& w, const std::string& name, int p) {
  auto golden = storage::safetensors_file::open(k_dir + "golden.safetensors");
  const int V = w.cfg.vocab_size;
  paged_model run(w, 128, 2);
  kv_storage kv(w.cfg.n_layer, 40, 4, w.cfg.kv_dim());
  std::vector<int> blocks(32);
  std::iota(blocks.begin(), blocks.end(), 0);
  const std::string key = name + ".p" + std::to_string(p);
  auto ids = golden.to_i32(key + ".ids");
  auto logits = golden.to_f32(key + ".logits");
  double worst = 0;
  for (int t = 0; t < static_cast<int>(ids.size()); ++t) {
    lm_chunk c{ids.data() + t, t, 1, blocks.data(), true};
    run.forward({&c, 1}, kv);
    worst = std::max(worst, rel_diff(run.logits(0), &logits[std::size_t(t) * V], V));
  }
  return worst;
}

void check_model(const std::string& name, const std::string& file = "golden.safetensors") {
  auto golden = storage::safetensors_file::open(k_dir + file);
  auto w = load_hf_weights(k_dir + "tiny-" + name);
  const int V = w.cfg.vocab_size;
  paged_model run(w, 128, 2);
  kv_storage kv(w.cfg.n_layer, 40, 4, w.cfg.kv_dim());
  std::vector<int> blocks(32);
  std::iota(blocks.rbegin(), blocks.rend(), 3);  // out of order on purpose
  for (int p = 0; p < 3; ++p) {
    const std::string key = name + ".p" + std::to_string(p);
    auto ids = golden.to_i32(key + ".ids");
    auto logits = golden.to_f32(key + ".logits");
    const int T = static_cast<int>(ids.size());
    CAPTURE(key);
    double worst = 0;
    for (int t = 0; t < T; ++t) {
      lm_chunk c{ids.data() + t, t, 1, blocks.data(), true};
      run.forward({&c, 1}, kv);
      worst = std::max(worst, rel_diff(run.logits(0), &logits[std::size_t(t) * V], V));
    }
    CHECK(worst < 2e-5);
    lm_chunk whole{ids.data(), 0, T, blocks.data(), true};
    run.forward({&whole, 1}, kv);
    CHECK(rel_diff(run.logits(0), &logits[std::size_t(T - 1) * V], V) < 2e-5);
  }
  // greedy continuation of p0
  auto ids = golden.to_i32(name + ".p0.ids");
  auto want = golden.to_i32(name + ".greedy");
  std::vector<int> seq(ids.begin(), ids.end());
  lm_chunk pre{seq.data(), 0, static_cast<int>(seq.size()), blocks.data(), true};
  run.forward({&pre, 1}, kv);
  std::vector<int> got;
  for (std::size_t i = 0; i < want.size(); ++i) {
    got.push_back(argmax(run.logits(0), V));
    seq.push_back(got.back());
    lm_chunk d{seq.data() + seq.size() - 1, static_cast<int>(seq.size()) - 1, 1, blocks.data(),
               true};
    run.forward({&d, 1}, kv);
  }
  CHECK(got == std::vector<int>(want.begin(), want.end()));
}

}  // namespace

TEST_CASE("lm hf: tiny Llama logits and greedy tokens equal the PyTorch twin") {
  check_model("llama");
}

TEST_CASE("lm hf: tiny Mixtral (MoE, 4 experts, top-2) logits and greedy tokens equal the twin") {
  const auto w = load_hf_weights(k_dir + "tiny-mixtral");
  CHECK(w.cfg.moe.experts == std::vector<int>{4, 4});
  CHECK(w.cfg.moe.top_k == 2);
  CHECK(w.cfg.moe.dropless);
  CHECK(w.cfg.moe.expert_intermediate == 96);
  check_model("mixtral", "mixtral_golden.safetensors");
}

TEST_CASE("lm hf: tiny GPT-2 logits and greedy tokens equal the PyTorch twin") {
  check_model("gpt2");
}

TEST_CASE("lm hf: tiny Llama 3.1 (llama3 rope scaling, tied head) equals the PyTorch twin") {
  check_model("llama31");
}

TEST_CASE("lm hf: the llama3 rope scaling is applied: without it the logits differ") {
  auto w = load_hf_weights(k_dir + "tiny-llama31");
  REQUIRE(w.cfg.rope.type == rope_scaling::kind::llama3);
  for (int p = 0; p < 3; ++p) CHECK(worst_decode_diff(w, "llama31", p) < 2e-5);
  // The same weights with plain RoPE, then with linear scaling by the same factor: both far off.
  w.cfg.rope = {};
  for (int p = 0; p < 3; ++p) CHECK(worst_decode_diff(w, "llama31", p) > 1e-2);
  w.cfg.rope = {.type = rope_scaling::kind::linear, .factor = 8.0};
  for (int p = 0; p < 3; ++p) CHECK(worst_decode_diff(w, "llama31", p) > 1e-2);
}

TEST_CASE("lm hf: rope_inv_freq keeps, blends and divides the llama3 bands") {
  model_spec c;
  c.arch = model_arch::llama;
  c.head_dim = 16;
  c.rope_theta = 10000.0f;
  const auto plain = rope_inv_freq(c);
  REQUIRE(plain.size() == 8);
  for (int i = 0; i < 8; ++i) CHECK(plain[i] == doctest::Approx(std::pow(1e4, -i / 8.0)));

  c.rope = {.type = rope_scaling::kind::linear, .factor = 4.0};
  const auto lin = rope_inv_freq(c);
  for (int i = 0; i < 8; ++i) CHECK(lin[i] == doctest::Approx(plain[i] / 4));

  // tiny-llama31's: old context 32, so wavelengths 2 pi / f < 8 are kept, > 32 divided by 8.
  c.rope = {.type = rope_scaling::kind::llama3,
            .factor = 8.0,
            .low_freq_factor = 1.0,
            .high_freq_factor = 4.0,
            .original_max_positions = 32};
  const auto l3 = rope_inv_freq(c);
  CHECK(l3[0] == plain[0]);  // wavelength 6.3
  // wavelength 19.9: s = (32 / 19.87 - 1) / 3 = 0.2035, f (s + (1 - s) / 8) = 0.09584
  const double s = (32 * plain[1] / (2 * 3.141592653589793) - 1) / 3;
  CHECK(l3[1] == doctest::Approx(plain[1] * (s + (1 - s) / 8)));
  CHECK(l3[1] == doctest::Approx(0.09584).epsilon(1e-4));
  for (int i = 2; i < 8; ++i) CHECK(l3[i] == doctest::Approx(plain[i] / 8));  // 62.8 and longer

  // Llama 3.1 8B's settings (theta 500000, head_dim 128, old context 8192): the first band
  // edge falls between i = 28 and 29 (wavelengths 1956 and 2402 vs 8192 / 4), the second
  // between i = 34 and 35 (6695 and 8219 vs 8192).
  c.head_dim = 128;
  c.rope_theta = 500000.0f;
  c.rope = {.type = rope_scaling::kind::llama3,
            .factor = 8.0,
            .low_freq_factor = 1.0,
            .high_freq_factor = 4.0,
            .original_max_positions = 8192};
  const auto big = rope_inv_freq(c);
  c.rope = {};
  const auto big_plain = rope_inv_freq(c);
  REQUIRE(big.size() == 64);
  for (int i = 0; i < 64; ++i) {
    CAPTURE(i);
    const double ratio = big_plain[i] / big[i];
    if (i <= 28)
      CHECK(ratio == 1.0);
    else if (i >= 35)
      CHECK(ratio == doctest::Approx(8.0));
    else
      CHECK((ratio > 1.0 && ratio < 8.0));
  }
}
