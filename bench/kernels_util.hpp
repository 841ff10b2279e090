#pragma once
// bench_kernels' shared pieces: options, the summary line's values, inputs, timing and the row
// printer, used by bench/kernels.cpp and its parts (kernels_quant.cpp, kernels_ggml.cpp).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/threads.hpp"
#include "tests/kernels/shapes.hpp"

namespace zf::bench_kernels {

namespace k = zf::kernels;
namespace sh = zf::test::shapes;
using clk = std::chrono::steady_clock;

struct options {
  int threads = 1;
  double min_ms = 100.0;
  std::string filter;
};
inline options opt;
inline std::map<std::string, double> summary;  // the last line, in key order

// n floats uniform in [-1, 1) from a fixed LCG (fast enough for hundreds of MB).
inline std::vector<float> fill(std::size_t n, unsigned seed = 1) {
  std::vector<float> v(n);
  std::uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<float>(static_cast<std::int64_t>(s >> 11) - (1ll << 52)) * 0x1p-52f;
  }
  return v;
}

inline std::vector<int> ids(std::size_t n, int hi) {
  std::vector<int> v(n);
  std::uint64_t s = 12345;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<int>((s >> 33) % static_cast<std::uint64_t>(hi));
  }
  return v;
}

// Median ms of f and of g, run alternately (so a loaded machine slows both alike) at least 3
// times each and opt.min_ms in total, after one warm-up run of each: for ratios against a peer.
template <class F, class G>
std::pair<double, double> time_pair(F&& f, G&& g) {
  f();
  g();
  std::vector<double> tf, tg;
  double total = 0.0;
  auto run = [&](auto&& h, std::vector<double>& t) {
    const auto t0 = clk::now();
    h();
    t.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
    total += t.back();
  };
  while (tf.size() < 3 || (total < 2 * opt.min_ms && tf.size() < 200)) {
    run(f, tf);
    run(g, tg);
  }
  std::sort(tf.begin(), tf.end());
  std::sort(tg.begin(), tg.end());
  return {tf[tf.size() / 2], tg[tg.size() / 2]};
}

// Median ms of f over at least 3 runs and opt.min_ms in total, after one warm-up run.
template <class F>
double time_ms(F&& f) {
  f();
  std::vector<double> t;
  double total = 0.0;
  while (t.size() < 3 || (total < opt.min_ms && t.size() < 200)) {
    const auto t0 = clk::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
    total += t.back();
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

inline bool wanted(const char* op) {
  return opt.filter.empty() || std::string(op).find(opt.filter) != std::string::npos;
}

// Prints one row; returns {GFLOP/s, GB/s}.
inline std::pair<double, double> report(const char* op, const std::string& shape, double ms,
                                        double flops, double bytes) {
  const double gf = flops / ms * 1e-6, gb = bytes / ms * 1e-6;
  std::printf("%-20s %-34s %10.3f ms %9.2f GFLOP/s %8.2f GB/s\n", op, shape.c_str(), ms, gf, gb);
  std::fflush(stdout);
  return {gf, gb};
}

inline std::string dims(std::initializer_list<long> d, const char* sep = "x") {
  std::string s;
  for (long x : d) {
    if (!s.empty()) s += sep;
    s += std::to_string(x);
  }
  return s;
}

// The sections in their own files.
void bench_quant();         // kernels_quant.cpp
void bench_w8a8_prefill();  // kernels_quant.cpp
void bench_ggml();          // kernels_ggml.cpp

}  // namespace zf::bench_kernels
