// Paged attention twin (kernels/paged_attention_cuda.cu) against the cpu kernel, simulated and on
// a GPU (tests/kernels/twin.hpp). The fixture is harness.hpp run_paged's (same seeds, the same
// scrambled block table over a NaN-filled pool, so a read outside the sequence's rows shows),
// here with q and out row strides wider than the heads and fp32 or bf16 pools. Shapes: the check
// rows of shapes.hpp (direct decodes and the cpu's GEMM path for tq > 4) plus rows that reach the
// twin's own edges: several 128-key splits and a row ending on a split boundary, head_dim past
// 128 threads, not a multiple of 4 (scalar loads), more than 16 query vectors per block.
//
// Tolerance, twin vs cpu (harness.hpp `near`): rtol 1e-5, atol 1e-6 of max|out|: the same
// attention with dots, exp and sums rounded in another order (split softmax rescaling included).
// Exact checks: padding and other heads' columns untouched; a bf16 pool gives the bits of the
// fp32 pool holding its widened values; a row gives the same bits alone, in a chunk and in a head
// range; a bad head range throws as the cpu kernel does.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <numeric>
#include <stdexcept>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "kernels/convert.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/paged_attention.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;
using zf::test::near;
using zf::test::randn;

namespace {

constexpr zf::test::tol k_paged{1e-5, 1e-6};
constexpr float k_sentinel = 7.0f;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// run_paged's inputs: q [tq, ldq], K/V rows of positions 0..ctx-1 in blocks of bs at the pool
// blocks table[p / bs] (reversed, rotated), every other slot NaN; bf16 copies of the pools.
struct fixture {
  paged_shape s;
  int bs, q_dim;
  std::vector<float> q, kp, vp;
  std::vector<std::uint16_t> k16, v16;
  std::vector<int> table;

  fixture(const sh::paged_case& c) : bs(c.block_size), q_dim(c.n_head * c.head_dim) {
    const int ctx = c.start + c.tq, KV = c.n_kv_head * c.head_dim;
    const int nblocks = (ctx + bs - 1) / bs + 3;
    s = {.tq = c.tq,
         .start = c.start,
         .n_head = c.n_head,
         .n_kv_head = c.n_kv_head,
         .head_dim = c.head_dim,
         .ldq = q_dim + 2,
         .ldo = q_dim + 3};
    q = randn(static_cast<std::size_t>(c.tq) * s.ldq, 1);
    const auto kd = randn(static_cast<std::size_t>(ctx) * KV, 2), vd = randn(kd.size(), 3);
    table.resize(nblocks);
    std::iota(table.begin(), table.end(), 0);
    std::reverse(table.begin(), table.end());
    std::rotate(table.begin(), table.begin() + 2, table.end());
    kp.assign(static_cast<std::size_t>(nblocks) * bs * KV, NAN);
    vp.assign(kp.size(), NAN);
    for (int p = 0; p < ctx; ++p) {
      const std::size_t dst = (static_cast<std::size_t>(table[p / bs]) * bs + p % bs) * KV;
      std::copy_n(&kd[static_cast<std::size_t>(p) * KV], KV, &kp[dst]);
      std::copy_n(&vd[static_cast<std::size_t>(p) * KV], KV, &vp[dst]);
    }
    for (const auto* pool : {&kp, &vp}) {
      auto& dst = pool == &kp ? k16 : v16;
      dst.resize(pool->size());
      for (std::size_t i = 0; i < pool->size(); ++i) dst[i] = f32_to_bf16((*pool)[i]);
    }
  }
  // The fp32 pools holding the bf16 pools' values, widened.
  void round_pools() {
    for (std::size_t i = 0; i < kp.size(); ++i) {
      kp[i] = bf16_to_f32(k16[i]);
      vp[i] = bf16_to_f32(v16[i]);
    }
  }
  paged_kv host_kv(bool bf) const {
    paged_kv kv{.blocks = table.data(), .block_size = bs, .kv_dim = s.n_kv_head * s.head_dim};
    if (bf) {
      kv.k16 = k16.data();
      kv.v16 = v16.data();
    } else {
      kv.k = kp.data();
      kv.v = vp.data();
    }
    return kv;
  }
  std::vector<float> cpu_out(bool bf) const {
    std::vector<float> out(static_cast<std::size_t>(s.tq) * s.ldo, k_sentinel);
    std::vector<float> scratch(static_cast<std::size_t>(cpu::paged_attention_scratch(s)));
    cpu::paged_attention(s, q.data(), host_kv(bf), out.data(), scratch.data());
    return out;
  }
};

// The fixture's inputs on backend b; run(shape, bf) returns the twin's out (sentinel-filled
// first, NaN scratch).
template <class B>
struct twin_run {
  B b;
  const fixture& f;
  typename B::template buffer<float> q, kp, vp;
  typename B::template buffer<std::uint16_t> k16, v16;
  typename B::template buffer<int> table;

  twin_run(B b_, const fixture& f_)
      : b(b_),
        f(f_),
        q(b.upload(f.q)),
        kp(b.upload(f.kp)),
        vp(b.upload(f.vp)),
        k16(b.upload(f.k16)),
        v16(b.upload(f.v16)),
        table(b.upload(f.table)) {}

  std::vector<float> run(const paged_shape& s, bool bf, bool direct_only = false) {
    paged_kv kv{.blocks = table.p, .block_size = f.bs, .kv_dim = s.n_kv_head * s.head_dim};
    if (bf) {
      kv.k16 = k16.p;
      kv.v16 = v16.p;
    } else {
      kv.k = kp.p;
      kv.v = vp.p;
    }
    const long n_scratch = ZF_TWIN(b, paged_attention_scratch, s);
    auto out = b.upload(std::vector<float>(static_cast<std::size_t>(s.tq) * s.ldo, k_sentinel));
    auto scratch = b.upload(std::vector<float>(static_cast<std::size_t>(n_scratch), NAN));
    if constexpr (B::simulated) {
      cuda_sim::paged_attention(s, q.p, kv, out.p, scratch.p, direct_only);
    } else {  // the public call takes direct_only from the batch-invariant mode
      const batch_invariant_scope invariant(direct_only);
      ZF_TWIN(b, paged_attention, s, q.p, kv, out.p, scratch.p);
    }
    return out.host();
  }
};

// Beyond the check rows: {tq, start, n_head, n_kv_head, head_dim, block_size}.
constexpr sh::paged_case k_edges[] = {
    {1, 300, 8, 2, 128, 16, sh::check},  // decode over 3 splits, Llama-like head_dim
    {3, 125, 4, 2, 16, 5, sh::check},    // rows end at keys 126..128: the split boundary
    {2, 40, 2, 1, 160, 8, sh::check},    // head_dim past 128: two column passes
    {4, 140, 16, 2, 16, 16, sh::check},  // 4 rows x 8 heads: two passes of 16 query vectors
    {4, 200, 6, 2, 13, 7, sh::check},    // odd head_dim: scalar loads
};

template <class B>
void check_case(B b, const sh::paged_case& c) {
  fixture f(c);
  twin_run<B> t(b, f);
  for (bool bf : {false, true}) {
    CAPTURE(bf);
    const auto want = f.cpu_out(bf), got = t.run(f.s, bf);
    CHECK(near(got, widen(want), k_paged));  // padding: the sentinel on both sides
  }
}

}  // namespace

TEST_CASE("cuda twin: paged attention equals the cpu kernel, fp32 and bf16 pools, GQA") {
  zf::test::twin::both("the paged attention twin", [](auto b) {
    std::vector<sh::paged_case> cases(std::begin(k_edges), std::end(k_edges));
    for (const auto& c : sh::paged_cases) {
      if ((c.use & sh::check) || !decltype(b)::simulated) cases.push_back(c);
    }
    for (const auto& c : cases) {
      CAPTURE(c.tq);
      CAPTURE(c.start);
      CAPTURE(c.n_head);
      CAPTURE(c.n_kv_head);
      CAPTURE(c.head_dim);
      CAPTURE(c.block_size);
      check_case(b, c);
    }
  });
}

TEST_CASE("cuda twin: paged attention rows are batch- and head-range-invariant, bf16 exact") {
  zf::test::twin::both("the paged attention twin", [](auto b) {
    using B = decltype(b);
    // 9 rows crossing the first split boundary, 8 heads in 2 kv-head groups of 4.
    fixture f(sh::paged_case{9, 122, 8, 2, 16, 4, sh::check});
    const int hd = f.s.head_dim, ldo = f.s.ldo;
    twin_run<B> t(b, f);
    const auto chunk = t.run(f.s, false);
    CHECK(same_bits(t.run(f.s, false, true), chunk));  // direct_only: the same kernel
    // Each row decoded alone (its q row, tq = 1 at its position) gives its bits in the chunk.
    int differ = 0;
    for (int i = 0; i < f.s.tq; ++i) {
      fixture one = f;
      one.s.tq = 1;
      one.s.start = f.s.start + i;
      one.q.assign(f.q.begin() + static_cast<std::ptrdiff_t>(i) * f.s.ldq,
                   f.q.begin() + static_cast<std::ptrdiff_t>(i + 1) * f.s.ldq);
      twin_run<B> t1(b, one);
      const auto row = t1.run(one.s, false);
      differ += std::memcmp(row.data(), chunk.data() + static_cast<std::size_t>(i) * ldo,
                            ldo * sizeof(float)) != 0;
    }
    CHECK(differ == 0);
    // A head range writes its heads' bits and leaves the others' columns alone.
    for (const auto& [h0, h1] : {std::pair{4, 8}, std::pair{0, 4}}) {
      CAPTURE(h0);
      paged_shape s = f.s;
      s.head_begin = h0;
      s.head_end = h1;
      const auto part = t.run(s, false);
      int wrong = 0;
      for (int i = 0; i < s.tq; ++i) {
        for (int col = 0; col < ldo; ++col) {
          const std::size_t e = static_cast<std::size_t>(i) * ldo + col;
          const bool mine = col >= h0 * hd && col < h1 * hd;
          wrong +=
              mine ? std::memcmp(&part[e], &chunk[e], sizeof(float)) != 0 : part[e] != k_sentinel;
        }
      }
      CHECK(wrong == 0);
    }
    paged_shape bad = f.s;
    bad.head_begin = 2;  // not a whole group of 4
    bad.head_end = 8;
    CHECK_THROWS_AS(t.run(bad, false), std::invalid_argument);
    // bf16 pools: the bits of the fp32 pools holding their widened values.
    const auto bf = t.run(f.s, true);
    fixture rounded = f;
    rounded.round_pools();
    twin_run<B> tr(b, rounded);
    CHECK(same_bits(bf, tr.run(f.s, false)));
  });
}

TEST_CASE("cuda twin: paged_kv_write puts rows in their slots, fp32 and bf16, others untouched") {
  zf::test::twin::both("the paged_kv_write twin", [](auto b) {
    const int n = 5, kv_dim = 12, ld = 40, slots = 16;
    const std::vector<int> slot = {9, 0, 15, 4, 10};  // scattered, as a block table makes them
    const auto src = zf::test::randn(std::size_t(n) * ld, 21);
    std::vector<float> k(std::size_t(slots) * kv_dim, -7.0f), v = k;
    std::vector<std::uint16_t> k16(k.size(), 0x7fc1), v16 = k16;
    cpu::paged_kv_write(src.data(), src.data() + kv_dim, ld, n, slot.data(), kv_dim, k.data(),
                        v.data(), nullptr, nullptr);
    cpu::paged_kv_write(src.data(), src.data() + kv_dim, ld, n, slot.data(), kv_dim, nullptr,
                        nullptr, k16.data(), v16.data());
    CHECK(k[4 * kv_dim + 3] == src[3 * ld + 3]);  // row 3 -> slot 4
    CHECK(v[4 * kv_dim + 3] == src[3 * ld + kv_dim + 3]);
    CHECK(k[1 * kv_dim] == -7.0f);  // slot 1 is no row's
    auto gs = b.upload(src), gslot = b.upload(slot);
    auto gk = b.upload(std::vector<float>(k.size(), -7.0f)), gv = b.upload(gk.host());
    auto gk16 = b.upload(std::vector<std::uint16_t>(k.size(), 0x7fc1)),
         gv16 = b.upload(gk16.host());
    ZF_TWIN(b, paged_kv_write, gs.p, gs.p + kv_dim, ld, n, gslot.p, kv_dim, gk.p, gv.p, nullptr,
            nullptr);
    ZF_TWIN(b, paged_kv_write, gs.p, gs.p + kv_dim, ld, n, gslot.p, kv_dim, nullptr, nullptr,
            gk16.p, gv16.p);
    CHECK(gk.host() == k);
    CHECK(gv.host() == v);
    CHECK(gk16.host() == k16);  // the same rounding (nearest even) as kv_storage::write
    CHECK(gv16.host() == v16);
  });
}
