// Data- and expert-parallel MoE training (runtime/model/moe_parallel) over thread ranks: with
// capacity drops, the balance loss and the z-loss on, W ranks at every ZeRO stage and expert-
// parallel size give the one-rank model's losses on the concatenated batch over 20 steps, and a
// run saved at one expert-parallel size resumes at another on the same curve.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <thread>

#include "kernels/adamw.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/train/zero.hpp"

using namespace zf;

namespace {

constexpr int k_rows = 8, k_t = 16, k_steps = 20, k_vocab = 89;

// extras: DeepSeek-V3's routing bias, Switch's router jitter and a gate scale on top.
model_config moe_model(bool llama, bool extras = false) {
  model_config m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 32;
  m.n_positions = 16;
  m.vocab_size = k_vocab;
  if (llama) {
    m.arch = "llama";
    m.n_kv_head = 1;
    m.tied_head = false;
  }
  m.moe.num_experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_intermediate = 24;
  m.moe.capacity_factor = 1.0;  // drops every step: the step's capacity, not a rank's
  m.moe.min_capacity = 1;
  m.moe.aux_loss_coef = 0.05;
  m.moe.z_loss_coef = 0.01;
  if (extras) {
    m.moe.bias_update_rate = 0.01;
    m.moe.jitter = 0.2;
    m.moe.gate_scale = 1.5;
  }
  return m;
}

optimizer_config optimizer() {
  optimizer_config o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  o.grad_clip = 1.0;
  return o;
}

double lr_of(int s) {
  schedule_config sc;
  sc.warmup = 2;
  return lr_at(optimizer(), sc, k_steps, s);
}

// Global batch of step s: k_rows rows of k_t + 1 ids; rows [r0, r0 + n) as inputs and targets.
void rows(int s, int r0, int n, std::vector<int>& in, std::vector<int>& tg) {
  std::mt19937 rng(500 + s);
  std::vector<int> g(std::size_t(k_rows) * (k_t + 1));
  for (auto& x : g) x = int(rng() % k_vocab);
  in.clear();
  tg.clear();
  for (int r = r0; r < r0 + n; ++r) {
    const int* row = g.data() + std::size_t(r) * (k_t + 1);
    in.insert(in.end(), row, row + k_t);
    tg.insert(tg.end(), row + 1, row + k_t + 1);
  }
}

struct state {
  std::vector<float> params, m, v;
};

// world ranks (threads) at ZeRO stage `stage` with expert parallelism ep, steps [first, last),
// from `from` (or the seed's initialisation); returns each step's loss (mean over ranks) and the
// final state in `out`.
std::vector<double> run(bool llama, int world, int ep, int stage, int first, int last,
                        const state* from, state* out, int* dropped = nullptr,
                        bool extras = false) {
  const model_config m = moe_model(llama, extras);
  auto comms = comm::make_local_group(world);
  std::vector<std::unique_ptr<zero_rank>> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.push_back(std::make_unique<zero_rank>(spec_of(m), optimizer(), stage, *comms[r]));
    ranks.back()->set_expert_parallel(ep);
  }
  const std::size_t total = layout_of(m).total;
  std::vector<float> init(total);
  init_params(layout_of(m), m.n_layer, 3, init.data());
  std::vector<double> losses(std::size_t(last - first)), loss(world), sq(world);
  auto body = [&](int r) {
    zero_rank& z = *ranks[r];
    if (from)
      z.import_state(from->params.data(), from->m.data(), from->v.data());
    else
      z.import_state(init.data(), nullptr, nullptr);
    token_batch tb;
    const int b = k_rows / world;
    tb.b = b;
    tb.t = k_t;
    for (int s = first; s < last; ++s) {
      rows(s, r * b, b, tb.inputs, tb.targets);
      tb.route_seed = 1000 + uint64_t(s);  // the step's, on every rank
      z.zero_grad();
      loss[r] = z.forward_backward(tb, 1.0f / world);
      z.reduce_gradients();
      sq[r] = z.grad_sq_norm();
      comms[r]->barrier();
      double n2 = 0, l = 0;
      for (int i = 0; i < world; ++i) n2 += sq[i], l += loss[i];
      comms[r]->barrier();
      if (r == 0) losses[std::size_t(s - first)] = l / world;
      if (r == 0 && dropped && s == first)
        for (auto& st : z.model().moe_stats()) *dropped += st.dropped;
      z.step(lr_of(s), s + 1, clip_coefficient(std::sqrt(n2), optimizer().grad_clip));
    }
  };
  std::vector<std::thread> th;
  for (int r = 0; r < world; ++r) th.emplace_back(body, r);
  for (auto& x : th) x.join();
  // The activations hold what activation_floats plans for this group (the exchange included).
  CHECK(ranks[0]->model().activation_bytes() / 4 ==
        activation_floats(spec_of(m), k_rows / world, k_t, world, ep));
  if (out) {
    out->params.assign(total, 0.0f);
    out->m.assign(total, 0.0f);
    out->v.assign(total, 0.0f);
    for (auto& z : ranks) z->export_state(out->params.data(), out->m.data(), out->v.data());
  }
  return losses;
}

void check_same(const std::vector<double>& got, const std::vector<double>& ref, int offset = 0) {
  for (std::size_t s = 0; s < got.size(); ++s) {
    CAPTURE(s + offset);
    CHECK(std::abs(got[s] - ref[s + offset]) <= 1e-5 * std::abs(ref[s + offset]));
  }
}

}  // namespace

TEST_CASE("moe parallel: expert parallel 1, 2, 4 at ZeRO 0-3 follow the one-rank curve") {
  for (bool llama : {false, true}) {
    CAPTURE(llama);
    int dropped = 0;
    const auto ref = run(llama, 1, 1, 0, 0, k_steps, nullptr, nullptr, &dropped);
    CHECK(dropped > 0);  // capacity binds: the parallel runs must drop the same choices
    for (auto [world, ep] : {std::pair{2, 1}, {2, 2}, {4, 2}, {4, 4}})
      for (int stage : {0, 1, 2, 3}) {
        CAPTURE(world);
        CAPTURE(ep);
        CAPTURE(stage);
        int d = 0;
        check_same(run(llama, world, ep, stage, 0, k_steps, nullptr, nullptr, &d), ref);
        CHECK(d == dropped);  // the step's drops, the same on every rank
      }
  }
}

TEST_CASE(
    "moe parallel: a run saved at expert parallel 2 resumes at 4 and at 1 on the same curve") {
  const auto ref = run(false, 1, 1, 0, 0, k_steps, nullptr, nullptr);
  state half;
  run(false, 2, 2, 2, 0, k_steps / 2, nullptr, &half);
  check_same(run(false, 4, 4, 3, k_steps / 2, k_steps, &half, nullptr), ref, k_steps / 2);
  check_same(run(false, 1, 1, 1, k_steps / 2, k_steps, &half, nullptr), ref, k_steps / 2);
}

TEST_CASE(
    "moe parallel: routing bias, router jitter and gate scale follow the one-rank curve, resumed "
    "too") {
  state one, rank1;
  const auto plain = run(false, 1, 1, 0, 0, k_steps, nullptr, nullptr);
  const auto ref = run(false, 1, 1, 0, 0, k_steps, nullptr, &one, nullptr, true);
  CHECK(std::abs(ref.back() - plain.back()) > 1e-4);  // the options change the run
  // The biases moved by whole multiples of the rate (the first layer's, here) and not all alike.
  const auto layout = layout_of(moe_model(false, true));
  const std::size_t b0 = layout.router_bias(0);
  REQUIRE(b0 != param_layout::none);
  for (int e = 0; e < 4; ++e) {
    const double steps = one.params[b0 + std::size_t(e)] / 0.01;
    CHECK(std::abs(steps - std::round(steps)) < 1e-3);
    CHECK(std::abs(steps) <= k_steps);
  }
  CHECK(one.params[b0] != one.params[b0 + 1]);
  for (auto [world, ep] : {std::pair{2, 1}, {4, 2}})
    for (int stage : {0, 1, 2, 3}) {
      CAPTURE(world);
      CAPTURE(ep);
      CAPTURE(stage);
      check_same(run(false, world, ep, stage, 0, k_steps, nullptr, nullptr, nullptr, true), ref);
    }
  state half;
  run(false, 2, 2, 3, 0, k_steps / 2, nullptr, &half, nullptr, true);
  check_same(run(false, 4, 4, 2, k_steps / 2, k_steps, &half, &rank1, nullptr, true), ref,
             k_steps / 2);
  CHECK(std::abs(rank1.params[b0] - one.params[b0]) < 1e-6);  // the bias carried over
}

TEST_CASE(
    "moe parallel: an expert-parallel size that divides neither ranks nor experts is refused") {
  auto comms = comm::make_local_group(2);
  zero_rank z(spec_of(moe_model(false)), optimizer(), 0, *comms[0]);
  CHECK_THROWS_WITH(z.set_expert_parallel(3), doctest::Contains("train.expert_parallel"));
  auto m = moe_model(false);
  m.moe.num_experts = 6;
  auto comms4 = comm::make_local_group(4);
  zero_rank y(spec_of(m), optimizer(), 0, *comms4[0]);
  CHECK_THROWS_WITH(y.set_expert_parallel(4), doctest::Contains("layer 0 has 6"));
}
