// The RL run's memory estimate (runtime/rl/rl_footprint): each role's figures on the tiny RL
// configuration against hand-computed sizes, the activations and the rollout engine's pool and
// scratch against what the model and engine_core really allocate, and the refusal that lists
// every role, largest first, with the keys to blame.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/memory.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/rl/rl_footprint.hpp"
#include "runtime/rl/tasks.hpp"
#include "runtime/serve/engine_core.hpp"
#include "runtime/text/byte_vocab.hpp"
#include "runtime/text/tokenizer.hpp"
#include "test_util.hpp"

using namespace zf;
using zf::rl::estimate_rl_footprint;
using zf::rl::rl_footprint;
using zf::testing::contains;
using zf::testing::error_of;

namespace {

// rl::apply_task_defaults, rlhf.* left at their defaults: S = 16 x 8 = 128 sequences of up to 8
// new tokens, grpo (KL 0.04: a reference), overlap 0, micro_batch 0.
run_config tiny() {
  run_config c;
  rl::apply_task_defaults(c);
  validate(c);
  return c;
}

constexpr int kPrompt = 12;          // the longest prompt, tokens
constexpr int kT = kPrompt + 8 - 1;  // packed row: prompt + max_new_tokens - 1 = 19
constexpr double kP = 118592;        // tiny()'s parameters, by hand below
constexpr double kS = 16 * 8;        // sequences per update
constexpr double kN = kS * 8;        // response tokens per update at most

const rl::role_footprint& role(const rl_footprint& fp, const std::string& name) {
  const rl::role_footprint* r = fp.find(name);
  REQUIRE_MESSAGE(r, name);
  return *r;
}

}  // namespace

TEST_CASE("rl footprint: the tiny config's parameters, by hand") {
  // wte 257 x 64 + wpe 32 x 64 + 2 blocks of (ln_1 2 x 64, c_attn 64 x 192 + 192, attn c_proj
  // 64 x 64 + 64, ln_2 2 x 64, c_fc 64 x 256 + 256, mlp c_proj 256 x 64 + 64) + ln_f 2 x 64
  const double block =
      128 + (64 * 192 + 192) + (64 * 64 + 64) + 128 + (64 * 256 + 256) + (256 * 64 + 64);
  CHECK(257 * 64 + 32 * 64 + 2 * block + 128 == kP);
  const model_spec s = spec_of(tiny().model);
  CHECK(double(make_layout(s).total) == kP);
  CHECK(count_params(s).total() == kP);
  model_spec v = s;
  v.value_head = true;  // critics and reward models: + v_head [64]
  CHECK(double(make_layout(v).total) == kP + 64);
}

TEST_CASE("rl footprint: each role of the default tiny config") {
  const run_config c = tiny();
  const model_spec s = spec_of(c.model);
  const rl_footprint fp = estimate_rl_footprint(c, kPrompt, false);
  REQUIRE(fp.roles.size() == 3);  // grpo with its default KL: no critic, no reward model
  CHECK(fp.roles[0].role == "policy");
  CHECK(fp.roles[1].role == "reference");
  CHECK(fp.roles[2].role == "rollout engine");
  const double acts = activation_floats(s, 128, kT) * 4;  // all 128 sequences at once

  const auto& pol = role(fp, "policy");
  CHECK(pol.weights == 4 * kP);
  CHECK(pol.grads == 4 * kP);
  CHECK(pol.optimizer == 2 * 4 * kP);  // AdamW exp_avg, exp_avg_sq
  CHECK(pol.activations == acts);
  CHECK(pol.kv == 0);
  CHECK(pol.other == (6 * kS * kT + 5 * kN) * 4);  // [b*t] rows and [N] per-token arrays

  const auto& ref = role(fp, "reference");
  CHECK(ref.weights == 4 * kP);
  CHECK(ref.grads == 0);
  CHECK(ref.optimizer == 0);
  CHECK(ref.activations == acts);  // its own arena for score()

  const auto& eng = role(fp, "rollout engine");
  CHECK(eng.weights == 2 * 4 * kP);  // served + being published (overlap 0)
  // max_seqs max(64, 128) contexts of ceil(32 / 16) = 2 blocks; a block is K and V of
  // 2 layers x 16 slots x 64 floats
  CHECK(rl::rollout_kv_blocks(c) == 256);
  CHECK(eng.kv == 256 * (2 * 2 * 16 * 64 * 4));
  CHECK(eng.grads == 0);
  CHECK(eng.activations == 0);

  CHECK(fp.total() == pol.total() + ref.total() + eng.total());
  CHECK(pol.total() == pol.weights + pol.grads + pol.optimizer + pol.activations + pol.other);
  CHECK(fp.find("critic") == nullptr);
  CHECK(fp.find("reward model") == nullptr);
}

TEST_CASE("rl footprint: activations are what forward_rl plans, logits included") {
  run_config c = tiny();
  c.rlhf.micro_batch = 4;
  const model_spec s = spec_of(c.model);
  c.rlhf.algorithm = "ppo";
  const rl_footprint fp = estimate_rl_footprint(c, kPrompt, false);
  std::vector<int> ids(std::size_t(4) * kT, 5), targets(ids.size(), 6);
  std::vector<float> logp(ids.size()), ent(ids.size()), values(ids.size());

  transformer policy(s);
  policy.init_weights(1);
  policy.forward_rl(ids.data(), targets.data(), 4, kT, logp.data(), ent.data(), nullptr);
  CHECK(double(policy.activation_bytes()) == role(fp, "policy").activations);

  model_spec cs = s;
  cs.value_head = true;
  transformer critic(cs);
  critic.init_weights(1);
  critic.forward_rl(ids.data(), nullptr, 4, kT, nullptr, nullptr, values.data());
  CHECK(double(critic.activation_bytes()) == role(fp, "critic").activations);
  CHECK(double(critic.params().size()) * 4 == role(fp, "critic").weights);
}

TEST_CASE("rl footprint: the rollout engine's pool and scratch are what engine_core allocates") {
  const run_config c = tiny();
  const model_spec s = spec_of(c.model);
  auto w = std::make_shared<const lm_weights>(
      copy_lm_weights(s, std::vector<float>(std::size_t(kP), 0.0f).data()));
  // paged_model as engine_core builds it: token_budget rows, max_seqs sampled rows, its threads
  const paged_model runner(*w, c.engine.token_budget, 128, c.rlhf.engine_threads);
  const rl_footprint fp = estimate_rl_footprint(c, kPrompt, false);
  CHECK(role(fp, "rollout engine").other == 2 * double(runner.scratch_bytes()));
  {  // Llama (SwiGLU, RoPE tables, grouped-query attention), static batches, more threads
    run_config l = c;
    l.model.arch = "llama";
    l.model.n_kv_head = 2;
    l.engine.policy = "static_batch";
    l.engine.token_budget = 24;  // static batches take max(token_budget, n_positions) rows
    l.rlhf.engine_threads = 3;
    validate(l);
    const model_spec ls = spec_of(l.model);
    const lm_weights lw =
        copy_lm_weights(ls, std::vector<float>(make_layout(ls).total, 0.0f).data());
    const paged_model lr(lw, 32, 128, 3);
    CHECK(role(estimate_rl_footprint(l, kPrompt, false), "rollout engine").other ==
          2 * double(lr.scratch_bytes()));
  }

  const testing::temp_dir dir("rl_footprint");
  std::ofstream(dir / "tokenizer.json", std::ios::binary) << byte_level_tokenizer_json();
  const tokenizer tok = tokenizer::load_hf(dir / "tokenizer.json");
  for (int kv_blocks : {0, 100}) {
    CAPTURE(kv_blocks);
    run_config e = c;
    e.engine.kv_blocks = kv_blocks;
    engine_core_options o;  // actors::core_options_of with pipelines/rl_run's max_seqs
    o.sched.token_budget = e.engine.token_budget;
    o.sched.max_seqs = 128;
    o.sched.block_size = e.engine.block_size;
    o.sched.prefix_caching = e.engine.prefix_caching;
    o.num_blocks = e.engine.kv_blocks;
    o.threads = e.rlhf.engine_threads;
    const engine_core core(w, tok, o);
    CHECK(core.pool().num_blocks() == rl::rollout_kv_blocks(e));
    CHECK(role(estimate_rl_footprint(e, kPrompt, false), "rollout engine").kv ==
          double(core.pool().num_blocks()) * (2 * 2 * 16 * 64 * 4));
  }
}

TEST_CASE("rl footprint: an automatic pool is capped at 1 GiB") {
  run_config c = tiny();
  c.model.n_positions = 1024;  // 64 blocks a context
  c.train.seq_len = 1024;
  c.rlhf.prompts_per_step = 512;  // 4096 sequences: 262144 blocks wanted
  validate(c);
  CHECK(rl::rollout_kv_blocks(c) == (1 << 30) / (2 * 2 * 16 * 64 * 4));
  const auto& eng = role(estimate_rl_footprint(c, kPrompt, false), "rollout engine");
  CHECK(eng.kv == double(1 << 30));
  CHECK_MESSAGE(contains(eng.keys, "capped at 1 GiB"), eng.keys);
}

TEST_CASE("rl footprint: ppo adds a critic, kl_coef 0 drops the reference, a reward model") {
  run_config c = tiny();
  c.rlhf.algorithm = "ppo";
  rl_footprint fp = estimate_rl_footprint(c, kPrompt, false);
  const double acts = activation_floats(spec_of(c.model), 128, kT) * 4;
  REQUIRE(fp.roles.size() == 4);
  CHECK(fp.roles[2].role == "critic");
  const auto& cr = role(fp, "critic");
  CHECK(cr.weights == 4 * (kP + 64));  // + v_head [n_embd]
  CHECK(cr.grads == 4 * (kP + 64));
  CHECK(cr.optimizer == 2 * 4 * (kP + 64));
  CHECK(cr.activations == acts);
  CHECK(cr.other == 3 * kN * 4);           // old values, returns, values
  CHECK(fp.find("reference") != nullptr);  // ppo's default KL is 0.1
  CHECK(rl::kl_coef_in_effect(c.rlhf) == 0.1);

  c.rlhf.kl_coef = 0;
  CHECK(estimate_rl_footprint(c, kPrompt, false).find("reference") == nullptr);
  c.rlhf.algorithm = "grpo";
  fp = estimate_rl_footprint(c, kPrompt, false);
  CHECK(fp.find("reference") == nullptr);
  CHECK(fp.roles.size() == 2);
  c.rlhf.kl_coef = -1;
  c.rlhf.algorithm = "rloo";
  CHECK(rl::kl_coef_in_effect(c.rlhf) == 0.05);
  CHECK(estimate_rl_footprint(c, kPrompt, false).find("reference") != nullptr);

  fp = estimate_rl_footprint(c, kPrompt, true);
  const auto& rm = role(fp, "reward model");
  CHECK(rm.weights == 4 * (kP + 64));
  CHECK(rm.grads == 0);
  CHECK(rm.optimizer == 0);
  CHECK(rm.activations == acts);
  CHECK(fp.roles.back().role == "rollout engine");
}

TEST_CASE("rl footprint: micro_batch shrinks activations, overlap grows the engine's weights") {
  run_config c = tiny();
  const rl_footprint full = estimate_rl_footprint(c, kPrompt, false);
  c.rlhf.micro_batch = 4;
  const rl_footprint micro = estimate_rl_footprint(c, kPrompt, false);
  const double acts4 = activation_floats(spec_of(c.model), 4, kT) * 4;
  CHECK(role(micro, "policy").activations == acts4);
  CHECK(role(micro, "reference").activations == acts4);
  CHECK(acts4 < role(full, "policy").activations / 20);
  CHECK(role(micro, "policy").other == (6 * 4 * kT + 5 * kN) * 4);  // [N] arrays stay whole
  CHECK(role(micro, "policy").weights == role(full, "policy").weights);
  CHECK_MESSAGE(contains(role(micro, "policy").keys, "rlhf.micro_batch = 4 sequences of 19"),
                role(micro, "policy").keys);
  c.rlhf.micro_batch = 1000;  // more than a batch: the whole batch at once
  CHECK(role(estimate_rl_footprint(c, kPrompt, false), "policy").activations ==
        role(full, "policy").activations);

  c.rlhf.micro_batch = 0;
  c.rlhf.ema = 0.992;  // rl_core keeps an EMA copy of the policy's weights
  CHECK(role(estimate_rl_footprint(c, kPrompt, false), "policy").other ==
        role(full, "policy").other + 4 * kP);
  c.rlhf.ema = 0;
  c.rlhf.overlap = 2;
  const rl_footprint over = estimate_rl_footprint(c, kPrompt, false);
  CHECK(role(over, "rollout engine").weights == 4 * 4 * kP);  // served, publishing, 2 waiting
  CHECK(role(over, "rollout engine").kv == role(full, "rollout engine").kv);
  CHECK(role(over, "policy").total() == role(full, "policy").total());

  CHECK(error_of([&] { estimate_rl_footprint(c, 0, false); }) ==
        "rl footprint: prompt_tokens must be >= 1, got 0");
}

TEST_CASE("rl footprint: a run that cannot fit lists every role, largest first") {
  run_config c = tiny();
  c.rlhf.algorithm = "ppo";
  const rl_footprint fp = estimate_rl_footprint(c, kPrompt, true);
  REQUIRE(fp.roles.size() == 5);
  const std::string m = error_of([&] { rl::check_rl_footprint(fp, 1 << 20); });
  CHECK_MESSAGE(
      contains(m, "rl: the run needs " + bytes_text(fp.total()) + ", this machine has 1 MiB: "), m);
  CHECK_MESSAGE(contains(m, "rlhf.prompts_per_step x rlhf.group_size = 16 x 8 = 128"), m);
  CHECK_MESSAGE(contains(m, "engine.kv_blocks = 0: 256 blocks"), m);
  std::vector<const rl::role_footprint*> order;
  for (auto& r : fp.roles) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(),
                   [](auto* a, auto* b) { return a->total() > b->total(); });
  std::size_t at = 0;
  for (auto* r : order) {  // each role once, with its figure, after the larger ones
    const std::size_t p = m.find(r->role + " " + bytes_text(r->total()) + " (");
    CHECK_MESSAGE(p != std::string::npos, r->role, ": ", m);
    CHECK_MESSAGE(p >= at, r->role, ": ", m);
    at = p;
  }
  CHECK(order.front()->role == "policy");  // [128 x 19] logits and activations outweigh 119 K
                                           // parameters

  CHECK_NOTHROW(rl::check_rl_footprint(fp, std::uint64_t(fp.total()) + 1));
  CHECK_NOTHROW(rl::check_rl_footprint(fp, machine_memory_bytes()));
  CHECK_THROWS_AS(rl::check_rl_footprint(fp, std::uint64_t(fp.total()) - 1), zf::error);
}
