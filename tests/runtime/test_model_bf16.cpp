// bf16 training keeps each block's rounded GEMM operands from forward to backward
// (block::operands16, issue 16): the same bits as rounding per GEMM, which the model still does
// where it keeps none (here forced by a calibration observer, which reads fp32 activations).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/gemm_lib.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/token_drop.hpp"

namespace {

struct no_op_observer final : zf::transformer::linear_observer {
  int calls = 0;
  void input(int, int, const float*, int) override { ++calls; }
};

zf::model_config small(const char* arch) {
  zf::model_config m;
  m.arch = arch;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = 64;
  m.vocab_size = 211;
  if (m.arch == "llama") {
    m.n_kv_head = 2;  // grouped-query attention
    m.attn_bias = true;
  }
  return m;
}

struct run_out {
  float loss = 0;
  std::vector<float> grads;
  std::size_t kept_bytes = 0;
};

// One forward_backward of a fixed batch at bf16 from fresh weights (seed 7).
run_out step(const zf::model_config& m, bool observe, const zf::token_drop* drop = nullptr) {
  zf::transformer model(m);
  model.init_weights(7);
  model.set_precision(zf::kernels::precision::bf16);
  no_op_observer obs;
  if (observe) model.set_observer(&obs);
  const int B = 2, T = 24;
  std::mt19937 rng(3);
  std::vector<int> ids(B * T), tg(B * T);
  for (auto& x : ids) x = int(rng() % unsigned(m.vocab_size));
  for (auto& x : tg) x = int(rng() % unsigned(m.vocab_size));
  run_out r;
  r.loss = model.forward_backward(ids.data(), tg.data(), B, T, 1.0f, drop);
  r.grads.assign(model.grads().data(), model.grads().data() + model.grads().size());
  r.kept_bytes = model.operand16_bytes();
  if (observe) CHECK(obs.calls > 0);
  return r;
}

void same_bits(const run_out& kept, const run_out& per_call) {
  CHECK(kept.kept_bytes > 0);  // the kept path really ran
  CHECK(per_call.kept_bytes == 0);
  CHECK(kept.loss == per_call.loss);
  REQUIRE(kept.grads.size() == per_call.grads.size());
  std::size_t differ = 0, nonzero = 0;
  for (std::size_t i = 0; i < kept.grads.size(); ++i) {
    differ += std::memcmp(&kept.grads[i], &per_call.grads[i], sizeof(float)) != 0;
    nonzero += kept.grads[i] != 0.0f;
  }
  CHECK(differ == 0);
  CHECK(nonzero > kept.grads.size() / 2);  // a real gradient, not an untouched buffer
}

}  // namespace

TEST_CASE("model bf16: kept operands give the per-GEMM rounding's bits (gpt2, llama)") {
  for (const char* arch : {"gpt2", "llama"}) {
    CAPTURE(arch);
    same_bits(step(small(arch), false), step(small(arch), true));
  }
}

TEST_CASE("model bf16: kept operands under random-LTD give the per-GEMM rounding's bits") {
  const zf::model_config m = small("gpt2");
  zf::token_drop drop;
  drop.layers = {1};
  drop.keep = 12;
  drop.seed = 5;
  same_bits(step(m, false, &drop), step(m, true, &drop));
}

TEST_CASE("model bf16: an fp32 model keeps no bf16 operands") {
  zf::transformer model(small("gpt2"));
  model.init_weights(7);
  std::vector<int> ids(24, 5), tg(24, 6);
  model.forward_backward(ids.data(), tg.data(), 1, 24);
  CHECK(model.operand16_bytes() == 0);
}
