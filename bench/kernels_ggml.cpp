// bench_kernels' ggml section (kernels/ggml_quant.hpp, issue 18): the memory's speed and the
// decode GEMV in every ggml format over a gpt2-124M decode step's weights.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/kernels_util.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/parallel.hpp"

namespace zf::bench_kernels {
namespace {

// Reads [p, p + bytes) once: 16 KiB pieces copied into one buffer that stays in L1 (glibc's
// memcpy: the widest loads this CPU has; the writes never leave the cache). Returns a byte of
// it so the reads cannot be dropped.
std::uint32_t read_all(const char* p, std::size_t bytes) {
  constexpr std::size_t piece = 16 << 10;
  alignas(64) static thread_local char sink[piece];
  for (std::size_t i = 0; i < bytes; i += piece)
    std::memcpy(sink, p + i, std::min(piece, bytes - i));
  return static_cast<unsigned char>(sink[0]);
}

}  // namespace

// ggml formats (issue 18): the decode GEMV (one token row, kernels/ggml_quant.hpp) at gpt2-124M's
// shapes in every format, as one decode step reads them: each layer shape in 12 distinct copies
// (the layers), timed as the 12 calls in turn, and the head once. Reported per shape at one
// thread and at all cores (the caller and the family's helper threads), in GB/s of weight
// bytes read. Before them, the memory's speed, on one thread and split over all cores, over a
// buffer past the L3 (twice its size, 256 MiB to 1 GiB): a memcpy (bytes read + written) and a
// streaming read (the buffer copied piece by piece into an L1-sized one: what a GEMV, which only
// reads, can reach at most).
void bench_ggml() {
  if (!wanted("ggml")) return;
  const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  const std::size_t copy_bytes = std::clamp<std::size_t>(
      l3 > 0 ? 2 * std::size_t(l3) : 0, std::size_t(256) << 20, std::size_t(1) << 30);
  {
    std::vector<char> src(copy_bytes, 1), dst(copy_bytes, 2);
    for (const int t : {1, hw}) {
      k::set_num_threads(t);
      const double ms = time_ms([&] {
        k::cpu::parallel_ranges(copy_bytes, 4096, t > 1 ? 0 : copy_bytes + 1,
                                [&](std::size_t b, std::size_t e) {
                                  std::memcpy(dst.data() + b, src.data() + b, e - b);
                                });
      });
      const double gb =
          report(("copy (memcpy) t" + std::to_string(t)).c_str(),
                 std::to_string(copy_bytes >> 20) + " MiB", ms, 0, 2.0 * double(copy_bytes))
              .second;
      summary[t == 1 ? "ggml_copy_gbs_t1" : "ggml_copy_gbs"] = gb;
      if (t == hw) break;
    }
    for (const int t : {1, hw}) {
      k::set_num_threads(t);
      std::atomic<std::uint32_t> sink{0};
      const double ms = time_ms([&] {
        k::cpu::parallel_ranges(copy_bytes / 4096, 1, t > 1 ? 0 : copy_bytes,
                                [&](std::size_t b, std::size_t e) {
                                  sink += read_all(src.data() + b * 4096, (e - b) * 4096);
                                });
      });
      const double gb = report(("read t" + std::to_string(t)).c_str(),
                               std::to_string(copy_bytes >> 20) + " MiB", ms, 0, double(copy_bytes))
                            .second;
      summary[t == 1 ? "ggml_read_gbs_t1" : "ggml_read_gbs"] = gb;
      if (t == hw) break;
    }
  }
  struct shape {
    int k, n, copies;
  };
  const shape shapes[] = {
      {768, 2304, 12}, {768, 768, 12}, {768, 3072, 12}, {3072, 768, 12}, {768, 50257, 1}};
  const std::pair<const char*, k::ggml_format> formats[] = {{"f32", k::ggml_format::f32},
                                                            {"f16", k::ggml_format::f16},
                                                            {"bf16", k::ggml_format::bf16},
                                                            {"q8_0", k::ggml_format::q8_0},
                                                            {"q4_0", k::ggml_format::q4_0}};
  for (const auto& [name, f] : formats) {
    std::vector<std::vector<std::uint8_t>> mats;  // per shape: copies x [n, row_bytes]
    for (const auto& s : shapes) {
      const auto w = fill(std::size_t(s.n) * s.k, 9);
      const std::size_t one = k::row_bytes(f, s.k) * s.n;
      std::vector<std::uint8_t> m(one * s.copies);
      k::ggml_quantize_rows(f, w.data(), 0, s.n, s.k, m.data());
      for (int c = 1; c < s.copies; ++c) std::memcpy(m.data() + one * c, m.data(), one);
      mats.push_back(std::move(m));
    }
    for (const int t : {1, hw}) {
      k::set_num_threads(t);
      double step_ms = 0, step_bytes = 0;
      for (std::size_t si = 0; si < std::size(shapes); ++si) {
        const auto& s = shapes[si];
        const auto x = fill(s.k, 10);
        std::vector<float> y(s.n);
        const std::size_t one = k::row_bytes(f, s.k) * s.n;
        const double ms = time_ms([&] {
                            for (int c = 0; c < s.copies; ++c)
                              k::ggml_gemm({f, s.n, s.k, mats[si].data() + one * c},
                                           {x.data(), 0, 1, nullptr, y.data(), 0, false});
                          }) /
                          s.copies;
        report(("ggml " + std::string(name) + " t" + std::to_string(t)).c_str(),
               dims({1, s.k, s.n}) + (s.copies > 1 ? " x" + std::to_string(s.copies) : ""), ms,
               2.0 * s.k * s.n, double(one));
        const int per_step = s.copies;  // 12 layers' copies, or the one head
        step_ms += ms * per_step;
        step_bytes += double(one) * per_step;
      }
      summary[std::string("ggml_") + name + (t == 1 ? "_gbs_t1" : "_gbs")] =
          step_bytes / step_ms * 1e-6;
      if (t == hw) break;
    }
  }
  k::set_num_threads(opt.threads);
}

}  // namespace zf::bench_kernels
