// ZeRO under MoE expert parallelism (runtime/train/zero_partition, runtime/dist/subgroup): a rank
// holds only its expert slot's experts at stages 0-2 (the other slots' pages of its flat buffers
// are never touched), the slot's gradients are reduced over its replicas alone, and evaluation
// routes over the group like training does. The training curves at every stage and expert-
// parallel size are test_moe_parallel.cpp's.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include "runtime/dist/comm.hpp"
#include "runtime/dist/subgroup.hpp"
#include "runtime/train/footprint.hpp"
#include "runtime/train/zero.hpp"

using namespace zf;

namespace {

model_config moe_model(int n_embd, int expert_intermediate, int vocab) {
  model_config m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = n_embd;
  m.n_positions = 16;
  m.vocab_size = vocab;
  m.moe.num_experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_intermediate = expert_intermediate;
  m.moe.capacity_factor = 1.0;
  m.moe.eval_capacity_factor = 0.5;  // binds in evaluation: the group's capacity, not a rank's
  m.moe.min_capacity = 1;
  m.moe.aux_loss_coef = 0.05;
  return m;
}

// Threads run f(r) for ranks 0..n-1 (a collective needs them all at once).
template <class F>
void on_ranks(int n, F f) {
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r) th.emplace_back(f, r);
  for (auto& t : th) t.join();
}

// Pages of [p, p + n floats) resident in memory, and the pages wholly inside it.
std::pair<std::size_t, std::size_t> resident_pages(const float* p, std::size_t n) {
  const std::uintptr_t page = std::uintptr_t(sysconf(_SC_PAGESIZE));
  const std::uintptr_t b = (std::uintptr_t(p) + page - 1) / page * page;
  const std::uintptr_t e = std::uintptr_t(p + n) / page * page;
  if (e <= b) return {0, 0};
  std::vector<unsigned char> v((e - b) / page);
  REQUIRE(mincore(reinterpret_cast<void*>(b), e - b, v.data()) == 0);
  std::size_t in = 0;
  for (auto c : v) in += c & 1;
  return {in, v.size()};
}

}  // namespace

TEST_CASE("zero partition: expert slots split each MoE block's experts over their replicas") {
  const param_layout layout = make_layout(spec_of(moe_model(32, 24, 89)));
  for (auto [world, slots] : {std::pair{2, 2}, {4, 2}, {4, 4}, {6, 2}}) {
    CAPTURE(world);
    CAPTURE(slots);
    const zero_partition p(layout, world, slots);
    std::vector<int> seen(layout.total, 0);
    std::size_t expert_floats = 0;
    for (int l = 0; l < 2; ++l)
      expert_floats += std::size_t(layout.experts(l).n) * layout.experts(l).stride;
    for (int r = 0; r < world; ++r) {
      std::size_t chunks = 0;
      for (const auto& piece : p.pieces) {
        const region o = p.owned(r, piece);
        CHECK(o.size() <= piece.chunk);
        CHECK(p.holds(r, piece) == (piece.slot < 0 || piece.slot == r % slots));
        if (p.holds(r, piece)) chunks += piece.chunk;
        for (auto k = o.begin; k < o.end; ++k) ++seen[k];
      }
      CHECK(chunks == p.owned_size);  // the same packing on every rank
      // every rank holds all but the other slots' experts
      CHECK(p.held_size(r) == layout.total - expert_floats / slots * (slots - 1));
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
    // a slot's piece is E/slots whole experts, ending the block's region
    for (const auto& piece : p.pieces)
      if (piece.slot >= 0) {
        const auto ex = layout.experts(int(piece.reg) - 1);
        CHECK(piece.range.size() == std::size_t(ex.n / slots) * ex.stride);
        CHECK(piece.range.begin == ex.begin + std::size_t(piece.slot) * piece.range.size());
      }
  }
  CHECK_THROWS_WITH(zero_partition(layout, 4, 3), doctest::Contains("3 expert slots"));
}

TEST_CASE("comm subgroup: reduce-scatter, all-gather and all-reduce over disjoint pairs") {
  constexpr int W = 4;
  constexpr std::size_t chunk = 48, n = 101;
  auto comms = comm::make_local_group(W);
  auto value = [](int r, std::size_t i) {
    return float(std::sin(0.37 * double(r * 1000 + int(i))));
  };
  on_ranks(W, [&](int r) {
    comm::subgroup g(*comms[std::size_t(r)], {r % 2, r % 2 + 2});  // {0, 2} and {1, 3}
    CHECK(g.world() == 2);
    CHECK(g.rank() == r / 2);
    const int a = r % 2, b = a + 2;
    std::vector<float> in(2 * chunk), out(chunk);
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = value(r, i);
    g.reduce_scatter(in.data(), out.data(), chunk);
    for (std::size_t i = 0; i < chunk; ++i) {
      const std::size_t k = std::size_t(r / 2) * chunk + i;
      CHECK(out[i] == value(a, k) + value(b, k));  // member order, like the parent's rank order
    }
    std::vector<float> all(2 * chunk);
    g.all_gather(in.data(), all.data(), chunk);
    for (std::size_t i = 0; i < chunk; ++i) {
      CHECK(all[i] == value(a, i));
      CHECK(all[chunk + i] == value(b, i));
    }
    // all_reduce: the pair's sum, and for {0, 2} bit for bit the parent's all-rank sum with
    // ranks 1 and 3 adding zeros
    std::vector<float> x(n), z(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = value(r, i), z[i] = r % 2 ? 0.0f : value(r, i);
    g.all_reduce(x.data(), n);
    comms[std::size_t(r)]->all_reduce(z.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      CHECK(x[i] == value(a, i) + value(b, i));
      if (r % 2 == 0) CHECK(x[i] == z[i]);
    }
  });
  auto one = comm::make_local_group(2);
  CHECK_THROWS_WITH(comm::subgroup(*one[0], {1}), doctest::Contains("not among its members"));
  CHECK_THROWS_WITH(comm::subgroup(*one[0], {1, 0}), doctest::Contains("ascending"));
}

TEST_CASE("zero: under expert parallelism a rank holds only its experts at stages 0-2") {
  // Experts of 1M floats each (4 MiB), the flat buffers over 32 MiB: lazily mapped, so a page no
  // one writes is never resident.
  const model_config m = moe_model(256, 2048, 4096);
  const model_spec spec = spec_of(m);
  const param_layout layout = make_layout(spec);
  REQUIRE(layout.total * sizeof(float) > k_lazy_zero_bytes);
  std::vector<float> init(layout.total);
  init_params(layout, m.n_layer, 7, init.data());
  optimizer_config oc;
  for (int stage : {0, 1, 2}) {
    CAPTURE(stage);
    auto comms = comm::make_local_group(2);
    std::vector<std::unique_ptr<zero_rank>> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.push_back(std::make_unique<zero_rank>(spec, oc, stage, *comms[std::size_t(r)]));
      ranks.back()->set_expert_parallel(2);
    }
    std::vector<int> ids(16), tg(16);
    for (int i = 0; i < 16; ++i)
      ids[std::size_t(i)] = (i * 37) % 4096, tg[std::size_t(i)] = (i * 11) % 4096;
    on_ranks(2, [&](int r) {
      zero_rank& z = *ranks[std::size_t(r)];
      z.import_state(init.data(), nullptr, nullptr);
      z.zero_grad();
      z.forward_backward(ids.data() + 8 * r, tg.data() + 8 * r, 1, 8, 0.5f);
      z.reduce_gradients();
      z.step(1e-3, 1, 1.0f);
    });
    run_config cfg;
    cfg.model = m;
    cfg.zero.stage = stage;
    cfg.train.expert_parallel = 2;
    const train_footprint fp = estimate_train_footprint(cfg, 2, 1);
    for (int r = 0; r < 2; ++r) {
      CAPTURE(r);
      zero_rank& z = *ranks[std::size_t(r)];
      std::size_t held = layout.total;
      for (int l = 0; l < 2; ++l) {
        const auto ex = layout.experts(l);
        const std::size_t half = std::size_t(ex.n / 2) * ex.stride;
        const std::size_t mine = ex.begin + std::size_t(r) * half,
                          other = ex.begin + std::size_t(1 - r) * half;
        held -= half;
        auto [in_other, pages] = resident_pages(z.model().params().data() + other, half);
        CHECK(pages > 0);
        CHECK(in_other == 0);  // never written, never read
        auto [in_mine, mine_pages] = resident_pages(z.model().params().data() + mine, half);
        CHECK(in_mine == mine_pages);
        if (stage < 2) {  // the model's flat gradients
          CHECK(resident_pages(z.model().grads().data() + other, half).first == 0);
          CHECK(resident_pages(z.model().grads().data() + mine, half).first > 0);
        }
      }
      const zero_memory mem = z.memory();
      CHECK(mem.param_bytes == double(held) * sizeof(float));
      CHECK(mem.param_bytes < 0.7 * double(layout.total) * sizeof(float));
      CHECK(fp.params == mem.param_bytes);
      CHECK(fp.grads == mem.grad_bytes);
      if (stage == 0) CHECK(mem.optim_bytes == 2 * double(held) * sizeof(float));
    }
    // the two ranks' persisted slices cover the layout once, and their parameters agree where
    // both hold them (the dense parts)
    std::vector<int> seen(layout.total, 0);
    for (auto& z : ranks)
      for (const auto& s : z->persisted())
        for (std::size_t k = s.flat_begin; k < s.flat_begin + s.len; ++k) ++seen[k];
    CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
    const auto ex0 = layout.experts(0);
    CHECK(std::equal(ranks[0]->model().params().data(),
                     ranks[0]->model().params().data() + ex0.begin,
                     ranks[1]->model().params().data()));
  }
}

TEST_CASE("moe parallel: evaluation routes over the group like one rank on the whole batch") {
  // eval_capacity_factor 0.5 binds: per-rank routing would drop other tokens than the group's.
  const model_config m = moe_model(32, 24, 89);
  const model_spec spec = spec_of(m);
  const param_layout layout = make_layout(spec);
  std::vector<float> init(layout.total);
  init_params(layout, m.n_layer, 3, init.data());
  std::mt19937 rng(11);
  std::vector<int> ids(4 * 16), tg(4 * 16);
  for (auto& x : ids) x = int(rng() % 89);
  for (auto& x : tg) x = int(rng() % 89);
  optimizer_config oc;
  auto one = comm::make_local_group(1);
  zero_rank ref(spec, oc, 0, *one[0]);
  ref.import_state(init.data(), nullptr, nullptr);
  const float want = ref.forward(ids.data(), tg.data(), 4, 16);
  for (auto [world, ep] : {std::pair{2, 2}, {4, 2}, {2, 1}})
    for (int stage : {0, 3}) {
      CAPTURE(world);
      CAPTURE(ep);
      CAPTURE(stage);
      auto comms = comm::make_local_group(world);
      std::vector<std::unique_ptr<zero_rank>> ranks;
      for (int r = 0; r < world; ++r) {
        ranks.push_back(std::make_unique<zero_rank>(spec, oc, stage, *comms[std::size_t(r)]));
        ranks.back()->set_expert_parallel(ep);
      }
      std::vector<float> loss(static_cast<std::size_t>(world));
      const int b = 4 / world;
      on_ranks(world, [&](int r) {
        zero_rank& z = *ranks[std::size_t(r)];
        z.import_state(init.data(), nullptr, nullptr);
        const std::size_t at = std::size_t(r) * b * 16;
        loss[std::size_t(r)] = z.forward(ids.data() + at, tg.data() + at, b, 16);
      });
      double mean = 0;
      for (float l : loss) mean += l / world;
      CHECK(std::abs(mean - want) <= 1e-5 * std::abs(want));
    }
}
