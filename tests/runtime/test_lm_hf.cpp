// Hugging Face models through the serving forward: a seeded tiny Llama (BF16, GQA, RoPE,
// SwiGLU, untied head) and GPT-2 written by the PyTorch twin (tests/golden/gen_hf.py, float64)
// give the twin's logits at every position, by paged token-by-token decoding and by one
// whole-prompt prefill; greedy continuation equals the twin's.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "runtime/lm.hpp"
#include "runtime/sampling.hpp"
#include "storage/safetensors.hpp"

using namespace zf;

namespace {

const std::string k_dir = ZF_SOURCE_DIR "/tests/golden/hf/";

double rel_diff(const float* a, const float* b, int n) {
  double d = 0, m = 0;
  for (int i = 0; i < n; ++i) {
    d = std::max(d, std::abs(double(a[i]) - b[i]));
    m = std::max(m, std::abs(double(b[i])));
  }
  return d / m;
}

void check_model(const std::string& name) {
  auto golden = storage::safetensors_file::open(k_dir + "golden.safetensors");
  auto w = load_hf_weights(k_dir + "tiny-" + name);
  const int V = w.cfg.vocab_size;
  lm_runner run(w, 128, 2);
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

TEST_CASE("lm hf: tiny GPT-2 logits and greedy tokens equal the PyTorch twin") {
  check_model("gpt2");
}
