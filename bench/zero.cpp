// bench_zero: training-step throughput per ZeRO stage and rank count (thread ranks, local
// backend) next to the 1-rank figure, same global batch, same process.
//   bench_zero [--shape tiny|small] [--steps N]
// Thread ranks share this machine's cores: OpenBLAS gets cores/ranks threads per rank, so the
// figures show the cost of the ZeRO mechanics (partitioning, collectives, gathers) rather than a
// multi-GPU speed-up.
#include "runtime/train/zero.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/threads.hpp"
#include "runtime/dist/comm.hpp"

using namespace zf;
using clk = std::chrono::steady_clock;

struct figure {
  double step_ms, tokens_per_s, comm_mib;
  zero_memory mem;
};

figure run(const model_config& m, int world, int stage, int global_b, int t, int steps) {
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  kernels::set_num_threads(std::max(1, cores / world));
  run_config tc;
  tc.optimizer.lr = 3e-4;
  auto comms = comm::make_local_group(world);
  std::vector<std::unique_ptr<zero_rank>> ranks;
  for (int r = 0; r < world; ++r)
    ranks.push_back(std::make_unique<zero_rank>(spec_of(m), tc.optimizer, stage, *comms[r]));
  auto layout = layout_of(m);
  std::vector<float> init(layout.total);
  init_params(layout, m.n_layer, 1, init.data());
  std::mt19937 rng(3);
  std::vector<int> ids(std::size_t(global_b) * (t + 1));
  for (auto& x : ids) x = int(rng() % m.vocab_size);
  std::vector<double> times;
  std::vector<double> sq(world);
  auto body = [&](int r) {
    auto& z = *ranks[r];
    z.import_state(init.data(), nullptr, nullptr);
    const int b = global_b / world;
    std::vector<int> in, tg;
    for (int row = r * b; row < r * b + b; ++row) {
      const int* p = ids.data() + std::size_t(row) * (t + 1);
      in.insert(in.end(), p, p + t);
      tg.insert(tg.end(), p + 1, p + t + 1);
    }
    for (int s = 0; s < steps + 1; ++s) {
      comms[r]->barrier();
      auto t0 = clk::now();
      if (s == 1) z.reset_bytes_communicated();
      z.zero_grad();
      z.forward_backward(in.data(), tg.data(), b, t, 1.0f / world);
      z.reduce_gradients();
      sq[r] = z.grad_sq_norm();
      comms[r]->barrier();
      double n2 = 0;
      for (double x : sq) n2 += x;
      z.step(3e-4, s + 1, clip_coefficient(std::sqrt(n2), 1.0));
      comms[r]->barrier();
      if (r == 0 && s > 0)  // step 0 warms up (first touch of every buffer)
        times.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
    }
  };
  std::vector<std::thread> th;
  for (int r = 0; r < world; ++r) th.emplace_back(body, r);
  for (auto& x : th) x.join();
  std::sort(times.begin(), times.end());
  double med = times[times.size() / 2];
  return {med, global_b * t / (med / 1000),
          ranks[0]->bytes_communicated() / double(steps) / 1048576, ranks[0]->memory()};
}

int main(int argc, char** argv) {
  std::string shape = "tiny";
  int steps = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--shape")
      shape = argv[i + 1];
    else if (a == "--steps")
      steps = std::stoi(argv[i + 1]);
  }
  model_config m;
  int B = 8, T = 256;
  if (shape == "tiny") {
    m.n_layer = 4, m.n_head = 4, m.n_embd = 256, m.vocab_size = 8192, m.n_positions = 256;
  } else {
    m.n_layer = 2, m.n_head = 2, m.n_embd = 64, m.vocab_size = 4096, m.n_positions = 128;
    T = 128;
  }
  auto base = run(m, 1, 0, B, T, steps);
  std::printf("shape %s, global batch %d x %d, %d timed steps\n", shape.c_str(), B, T, steps);
  std::printf(
      "| ranks | stage | step ms | tokens/s | vs 1 rank | params/grads/optim MiB per rank | comm "
      "MiB/step |\n|---|---|---|---|---|---|---|\n");
  auto row = [&](int w, int s, const figure& f) {
    std::printf("| %d | %d | %.1f | %.0f | %.2f | %.1f/%.1f/%.1f | %.1f |\n", w, s, f.step_ms,
                f.tokens_per_s, f.tokens_per_s / base.tokens_per_s, f.mem.param_bytes / 1048576,
                f.mem.grad_bytes / 1048576, f.mem.optim_bytes / 1048576, f.comm_mib);
  };
  row(1, 0, base);
  double worst = 1e9;
  for (int w : {2, 4})
    for (int s : {0, 1, 2, 3}) {
      auto f = run(m, w, s, B, T, steps);
      row(w, s, f);
      worst = std::min(worst, f.tokens_per_s / base.tokens_per_s);
    }
  std::printf("zero min_ratio_vs_1rank=%.2f\n", worst);
  return 0;
}
