// Gradients in bf16 on the wire (train.reduce_dtype = bf16): all_reduce_bf16 and
// reduce_scatter_bf16 on the local group (inputs rounded, fp32 sums in rank order, one rounding:
// a closed form to the bit) and on Gloo (bf16 along the ring: every rank the same bits, bf16
// values within the ring's rounding of the exact sum), and the bytes they count (half of fp32's).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "comm_groups.hpp"
#include "kernels/convert.hpp"
#include "runtime/dist/comm.hpp"
#include "test_util.hpp"

namespace {

using namespace zf::comm;
using zf::testing::comm_group;
using zf::testing::on_ranks;

// Not exactly representable in bf16, of mixed signs and sizes.
float messy(int rank, std::size_t i) {
  return static_cast<float>(std::sin(0.37 * double(i) + 1.3 * rank) * (1 + i % 7) * 10 + 0.01);
}
float bf16(float x) {
  return zf::kernels::bf16_to_f32(zf::kernels::f32_to_bf16(x));
}
bool is_bf16(float x) {
  std::uint32_t u = 0;
  std::memcpy(&u, &x, 4);
  return (u & 0xffffu) == 0;
}

// Rank q's input [n] and, per element, the local group's answer: bf16(sum in rank order of
// bf16(x_q)), and the exact (double) sum with the sum of magnitudes for the Gloo bound.
struct expected {
  std::vector<float> local;
  std::vector<double> exact, mag;
};
expected expect(int w, std::size_t n) {
  expected e{std::vector<float>(n), std::vector<double>(n), std::vector<double>(n)};
  for (std::size_t i = 0; i < n; ++i) {
    float s = 0;
    for (int q = 0; q < w; ++q) {
      s += bf16(messy(q, i));
      e.exact[i] += messy(q, i);
      e.mag[i] += std::fabs(messy(q, i));
    }
    e.local[i] = bf16(s);
  }
  return e;
}

// Runs both collectives on g; local: the closed form to the bit, else within the ring's bf16
// rounding (w - 1 partial sums and the inputs, each within 2^-8 relative: bound (w + 1) 2^-8
// of the magnitudes). Every rank's all_reduce result has the same bits; bytes are bf16's.
void check_group(comm_group& g, bool local) {
  const int w = int(g.size());
  const std::size_t chunk = 3001, n = std::size_t(w) * chunk;  // odd: no lucky alignment
  const expected e = expect(w, n);
  std::vector<std::vector<float>> reduced(g.size());
  on_ranks(g, [&](communicator& c) {
    const int r = c.rank();
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = messy(r, i);
    c.reset_bytes();
    c.all_reduce_bf16(x.data(), n);
    CHECK(c.bytes_sent() == ring_bytes(op::all_reduce, n * 2, w, r));
    reduced[std::size_t(r)] = x;
    // reduce_scatter in place: out is in + r*chunk.
    for (std::size_t i = 0; i < n; ++i) x[i] = messy(r, i);
    c.reset_bytes();
    float* out = x.data() + std::size_t(r) * chunk;
    c.reduce_scatter_bf16(x.data(), out, chunk);
    CHECK(c.bytes_sent() == ring_bytes(op::reduce_scatter, n * 2, w, r));
    std::size_t bad = 0;
    for (std::size_t i = 0; i < chunk; ++i) {
      const std::size_t k = std::size_t(r) * chunk + i;
      if (local)
        bad += out[i] != e.local[k];
      else
        bad += !is_bf16(out[i]) || std::fabs(out[i] - e.exact[k]) > (w + 1) * 0x1p-8 * e.mag[k];
    }
    CHECK(bad == 0);
  });
  std::size_t bad = 0, differ = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = reduced[0][i];
    if (local)
      bad += v != e.local[i];
    else
      bad += !is_bf16(v) || std::fabs(v - e.exact[i]) > (w + 1) * 0x1p-8 * e.mag[i];
    for (int r = 1; r < w; ++r)
      differ += std::memcmp(&v, &reduced[std::size_t(r)][i], sizeof v) != 0;
    // really rounded: the fp32 sum of fp32 inputs differs from these in most elements
  }
  CHECK(bad == 0);
  CHECK(differ == 0);
  if (w > 1) {
    std::size_t rounded_away = 0;
    for (std::size_t i = 0; i < n; ++i) rounded_away += reduced[0][i] != float(e.exact[i]);
    CHECK(rounded_away > n / 2);
  }
}

}  // namespace

TEST_CASE("comm bf16: local groups of 1 to 4 sum rounded inputs in rank order, to the bit") {
  for (int w = 1; w <= 4; ++w) {
    CAPTURE(w);
    auto g = make_local_group(w);
    check_group(g, true);
  }
}

TEST_CASE("comm bf16: gloo groups of 1 to 3 send bf16 and agree on every rank") {
  for (int w = 1; w <= 3; ++w) {
    CAPTURE(w);
    zf::testing::temp_dir dir("comm_bf16");
    auto g = zf::testing::make_gloo_group(w, dir.path, "bf16",
                                          zf::testing::quick_options(std::chrono::seconds(20)));
    check_group(g, w == 1);  // one rank: nothing travels, the local rounding
  }
}
