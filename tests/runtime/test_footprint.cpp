// The sizes a run is checked against before anything is allocated (issue 9, "bad input that
// still gets through"): count_params and activation_floats against what the layout and the model
// really take, the ZeRO footprint against zero_rank's own accounting, and the refusals that name
// the keys to blame with the bytes needed and available.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <numeric>
#include <vector>

#include "runtime/core/memory.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/footprint.hpp"
#include "runtime/train/zero.hpp"
#include "test_util.hpp"

using namespace zf;
using zf::testing::contains;
using zf::testing::error_of;

namespace {

// Every layout variant: GPT-2 tied / untied, Llama with and without attention biases and GQA,
// MoE blocks (PR-MoE GPT-2, Llama with MoE on every other layer).
std::vector<model_config> variants() {
  std::vector<model_config> out;
  model_config g;
  g.n_layer = 2;
  g.n_head = 2;
  g.n_embd = 32;
  g.n_positions = 16;
  g.vocab_size = 97;
  out.push_back(g);
  g.tied_head = false;
  g.intermediate = 48;
  out.push_back(g);
  model_config l = out[0];
  l.arch = "llama";
  l.n_head = 4;
  l.n_kv_head = 2;
  l.intermediate = 40;
  l.tied_head = false;
  out.push_back(l);
  l.attn_bias = true;
  l.tied_head = true;
  l.head_dim = 16;  // q_dim 64 != n_embd
  out.push_back(l);
  model_config pr = out[0];  // MoE: PR-MoE (residual MLP, 2 then 4 experts, top-2)
  pr.moe.num_experts = 4;
  pr.moe.layer_experts = {2, 4};
  pr.moe.residual = true;
  pr.moe.expert_intermediate = 24;
  out.push_back(pr);
  model_config lm = out[2];  // MoE on every other layer of a Llama, top-1
  lm.moe.num_experts = 3;
  lm.moe.top_k = 1;
  lm.moe.interval = 2;
  out.push_back(lm);
  return out;
}

}  // namespace

TEST_CASE("footprint: count_params is make_layout's total, in parts") {
  for (const model_config& m : variants()) {
    CAPTURE(m.arch);
    CAPTURE(m.tied_head);
    const model_spec s = spec_of(m);
    const param_layout layout = make_layout(s);
    const param_counts pc = count_params(s);
    CHECK(pc.total() == double(layout.total));
    const std::size_t v = layout.at(m.arch == "llama" ? "embed_tokens.weight" : "wte.weight").numel;
    CHECK(pc.vocab == double(v) * (m.tied_head ? 1 : 2));
  }
}

TEST_CASE("footprint: activation_floats is what the model plans for a batch") {
  for (const model_config& m : variants()) {
    CAPTURE(m.arch);
    transformer model(m);
    model.init_weights(1);
    for (auto [b, t] : {std::pair{1, 16}, {3, 7}}) {
      std::vector<int> ids(std::size_t(b) * t, 5), targets(ids.size(), 6);
      model.forward_backward(ids.data(), targets.data(), b, t);
      CHECK(activation_floats(model.spec(), b, t) * sizeof(float) ==
            double(model.activation_bytes()));
    }
  }
}

TEST_CASE("footprint: each ZeRO stage's estimate is what a rank holds") {
  run_config cfg;
  cfg.model = variants()[2];
  cfg.train.batch_size = 2;
  cfg.train.seq_len = 8;
  const double P = double(layout_of(cfg.model).total) * sizeof(float);
  for (int stage = 0; stage <= 3; ++stage) {
    CAPTURE(stage);
    cfg.zero.stage = stage;
    auto comms = comm::make_local_group(2);
    zero_rank z(spec_of(cfg.model), cfg.optimizer, stage, *comms[0]);
    const zero_memory m = z.memory();
    const train_footprint fp = estimate_train_footprint(cfg, 2, 1);
    const double owned = double(z.partition().owned_size) * sizeof(float);
    CHECK(fp.params == m.param_bytes);
    CHECK(fp.grads == m.grad_bytes);
    CHECK(fp.moments >= m.optim_bytes);  // the last rank's owned chunks may end short
    CHECK(fp.moments <= 2 * (stage == 0 ? P : owned));
    CHECK(fp.buffers == m.bucket_bytes);
    CHECK(fp.copies == std::max(P, 3 * owned));  // initial flat parameters, or a snapshot
    // Thread ranks of one process add up.
    const train_footprint two = estimate_train_footprint(cfg, 2, 2);
    CHECK(two.grads == 2 * fp.grads);
    CHECK(two.activations == 2 * fp.activations);
  }
}

TEST_CASE("footprint: a run that cannot fit names its keys and the bytes") {
  const std::uint64_t have = machine_memory_bytes();
  REQUIRE(have > (std::uint64_t(1) << 28));
  run_config small;
  small.model.n_embd = 64;
  small.model.n_layer = 2;
  CHECK_NOTHROW(check_train_footprint(small, 1, 1, have));
  std::string m = error_of([&] { check_train_footprint(small, 1, 1, 1 << 20); });
  // 8 x 128 rows of 50257 logits outweigh 3.3 M parameters
  CHECK_MESSAGE(contains(m, "train.batch_size = 8, train.seq_len = 128:"), m);
  CHECK_MESSAGE(contains(m, "this machine has 1 MiB"), m);

  run_config wide;  // issue 9: a bad_alloc after config.toml was written
  wide.model.n_embd = 65536;
  m = error_of([&] { check_train_footprint(wide, 1, 1, have); });
  CHECK_MESSAGE(contains(m, "model.n_layer = 4, model.n_embd = 65536:"), m);
  CHECK_MESSAGE(contains(m, "TiB of memory (parameters"), m);
  CHECK_MESSAGE(contains(m, "this machine has " + bytes_text(double(have))), m);

  run_config vocab;
  vocab.model.vocab_size = 1 << 22;
  vocab.model.n_embd = 8192;
  m = error_of([&] { check_train_footprint(vocab, 1, 1, have); });
  CHECK_MESSAGE(contains(m, "model.vocab_size = 4194304, model.n_embd = 8192:"), m);

  run_config batch;
  batch.train.batch_size = 1 << 16;
  m = error_of([&] { check_train_footprint(batch, 1, 1, have); });
  CHECK_MESSAGE(contains(m, "train.batch_size = 65536, train.seq_len = 128:"), m);

  run_config ranks = small;  // thread ranks each hold a full copy at stage 0
  ranks.train.ranks = 4;
  m = error_of([&] { check_train_footprint(ranks, 4, 4, 1 << 20); });
  CHECK_MESSAGE(contains(m, ", train.ranks = 4:"), m);
  CHECK_MESSAGE(contains(m, "4 rank(s) in this process, zero.stage 0"), m);

  run_config gpu = small;  // train.device = cuda: the state against the GPU, copies the host
  gpu.train.device = "cuda";
  CHECK_NOTHROW(check_train_footprint(gpu, 1, 1, have, have));
  CHECK_NOTHROW(check_train_footprint(gpu, 1, 1, have / 8, have));  // the host holds copies only
  m = error_of([&] { check_train_footprint(gpu, 1, 1, have, 1 << 20); });
  CHECK_MESSAGE(contains(m, "train.batch_size = 8, train.seq_len = 128: training on the GPU"), m);
  CHECK_MESSAGE(contains(m, "this GPU has 1 MiB free"), m);
  m = error_of([&] { check_train_footprint(gpu, 1, 1, 1 << 20, have); });
  CHECK_MESSAGE(contains(m, "checkpoint copy needs about"), m);
}

TEST_CASE("footprint: sizes whose products overflow an int are refused by check_spec") {
  model_spec s;  // what a hostile config.json can ask for: every field a valid int
  s.arch = model_arch::llama;
  s.vocab_size = 1000;
  s.hidden = 1 << 30;
  s.n_layer = 1;
  s.n_head = 1;
  s.n_kv_head = 1;
  s.head_dim = 1 << 30;
  s.intermediate = 64;
  s.max_positions = 16;
  std::string m = error_of([&] { check_spec(s); });
  CHECK_MESSAGE(contains(m, "attention columns"), m);
  s.hidden = s.head_dim = 1 << 20;
  s.intermediate = INT_MAX / 2 + 1;
  m = error_of([&] { check_spec(s); });
  CHECK_MESSAGE(contains(m, "intermediate size"), m);
  s.intermediate = 64;
  s.vocab_size = 1 << 30;  // 2^50 parameters in the embedding alone
  m = error_of([&] { check_spec(s); });
  CHECK_MESSAGE(contains(m, "beyond any machine's memory"), m);
  s.vocab_size = 1000;
  CHECK_NOTHROW(check_spec(s));
}

TEST_CASE("footprint: bytes_text") {
  CHECK(bytes_text(0) == "0 B");
  CHECK(bytes_text(1023) == "1023 B");
  CHECK(bytes_text(1536) == "1.5 KiB");
  CHECK(bytes_text(double(std::uint64_t(3) << 40)) == "3 TiB");
  CHECK(machine_memory_bytes() > 0);
}
