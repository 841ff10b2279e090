// Dense attention twin (kernels/attention_cuda.cu) against the cpu kernel, simulated and on a GPU
// (tests/kernels/twin.hpp), over the check rows of shapes.hpp: multi-head and grouped-query, KV
// offsets, odd head sizes and query counts on both sides of the twin's 64-row tiles. Layout as
// the harness's: q/k/v are views into fused [tk, Q + 2 KV] rows, out has 3 padding columns.
//
// Tolerance (harness.hpp `near`: |got - want| <= rtol |want| + atol max|want|), twin vs cpu:
//   att                 rtol 1e-5, atol 1e-7   expf vs the cpu's Cephes exp, float vs double sums
//   out, dq, dk, dv     rtol 1e-4, atol 1e-6   sums of up to 257 products (1024 on a GPU, which
//                                               adds the bench rows) in another order; dq/dk go
//                                               through att * (datt - sum), which cancels
// Exact checks: masked att entries are 0, out's padding and dq's rows before the chunk (not head
// columns of this call) keep their values, two runs give the same bits (no atomics).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <vector>

#include "harness.hpp"
#include "kernels/attention.hpp"
#include "kernels/gemm_lib.hpp"
#include "shapes.hpp"
#include "twin.hpp"

using namespace zf::kernels;
using zf::test::widen;
namespace sh = zf::test::shapes;
using zf::test::columns;
using zf::test::near;
using zf::test::randn;
using zf::test::tol;

namespace {

constexpr tol k_att{1e-5, 1e-7}, k_out{1e-4, 1e-6};

// Entries of att [n_head, tq, tk] past each row's causal limit that are not exactly 0.
int masked_nonzero(const std::vector<float>& att, int nh, int tq, int tk, int off) {
  int bad = 0;
  for (int h = 0; h < nh; ++h) {
    for (int i = 0; i < tq; ++i) {
      for (int j = off + i + 1; j < tk; ++j) {
        bad += att[(static_cast<std::size_t>(h) * tq + i) * tk + j] != 0.0f;
      }
    }
  }
  return bad;
}

template <class B>
void check_case(B b, const sh::attention_case& c) {
  const int nh = c.n_head, nkv = c.n_kv_head > 0 ? c.n_kv_head : nh, hd = c.head_dim;
  const int tq = c.tq, off = c.offset, tk = off + tq;
  const int Q = nh * hd, KV = nkv * hd, ld = Q + 2 * KV, ldo = Q + 3;
  const attention_shape s{tq, tk, off, nh, hd, ld, ld, ld, ldo, c.n_kv_head};
  const std::size_t att_n = static_cast<std::size_t>(nh) * tq * tk;
  // Fused rows of the whole sequence; this chunk's queries are its last tq rows.
  const auto qkv = randn(static_cast<std::size_t>(tk) * ld, 1 + tq + off, 1.5f);
  const std::size_t q0 = static_cast<std::size_t>(off) * ld;
  std::vector<float> out(static_cast<std::size_t>(tq) * ldo, 7.0f), att(att_n, NAN);
  cpu::attention_forward(s, qkv.data() + q0, qkv.data() + Q, qkv.data() + Q + KV, out.data(),
                         att.data());
  auto d_qkv = b.upload(qkv), d_out = b.upload(std::vector<float>(out.size(), 7.0f));
  auto d_att = b.upload(std::vector<float>(att_n, NAN));
  ZF_TWIN(b, attention_forward, s, d_qkv.p + q0, d_qkv.p + Q, d_qkv.p + Q + KV, d_out.p, d_att.p);
  const auto t_out = d_out.host(), t_att = d_att.host();
  CHECK(near(t_att, widen(att), k_att));
  CHECK(masked_nonzero(t_att, nh, tq, tk, off) == 0);
  CHECK(near(t_out, widen(out), k_out));  // padding columns: 7 on both sides, exactly

  // Backward into NaN-filled fused buffers: every head column the call owns is overwritten.
  const auto dout = randn(static_cast<std::size_t>(tq) * ldo, 2 + tq);
  std::vector<float> dqkv(qkv.size(), NAN), datt(att_n, NAN);
  cpu::attention_backward(s, qkv.data() + q0, qkv.data() + Q, qkv.data() + Q + KV, att.data(),
                          dout.data(), datt.data(), dqkv.data() + q0, dqkv.data() + Q,
                          dqkv.data() + Q + KV);
  auto d_dout = b.upload(dout), d_dqkv = b.upload(std::vector<float>(qkv.size(), NAN));
  auto d_datt = b.upload(std::vector<float>(att_n, NAN));
  auto run_backward = [&] {
    ZF_TWIN(b, attention_backward, s, d_qkv.p + q0, d_qkv.p + Q, d_qkv.p + Q + KV, d_att.p,
            d_dout.p, d_datt.p, d_dqkv.p + q0, d_dqkv.p + Q, d_dqkv.p + Q + KV);
    return d_dqkv.host();
  };
  const auto t_dqkv = run_backward();
  const auto rows = [&](const std::vector<float>& x, int row0, int col0, int C) {
    const auto all = columns(x, tk, ld, col0, C);
    return std::vector<float>(all.begin() + static_cast<std::ptrdiff_t>(row0) * C, all.end());
  };
  CHECK(near(rows(t_dqkv, off, 0, Q), widen(rows(dqkv, off, 0, Q)), k_out));
  CHECK(near(rows(t_dqkv, 0, Q, KV), widen(rows(dqkv, 0, Q, KV)), k_out));
  CHECK(near(rows(t_dqkv, 0, Q + KV, KV), widen(rows(dqkv, 0, Q + KV, KV)), k_out));
  int untouched = 0;  // dq's rows before the chunk belong to no one here
  for (std::size_t i = 0; i < q0; i += ld) {
    for (int col = 0; col < Q; ++col) untouched += std::isnan(t_dqkv[i + col]);
  }
  CHECK(untouched == off * Q);
  const auto again = run_backward();  // deterministic: the same bits (NaN rows included)
  CHECK(std::memcmp(again.data(), t_dqkv.data(), again.size() * sizeof(float)) == 0);
}

// Beyond the check rows {tq, offset, n_head, n_kv_head, head_dim}: Llama's head_dim 128 (two
// 64-column tiles) with GQA, in training and at a KV offset with a group of 4.
constexpr sh::attention_case k_edges[] = {
    {130, 0, 4, 2, 128, sh::check},
    {3, 200, 4, 1, 128, sh::check},
};

}  // namespace

TEST_CASE("cuda twin: attention forward and backward equal the cpu kernels, MHA GQA offsets") {
  const precision_scope f32(precision::f32);  // the cpu kernel's GEMMs in fp32, as the twin's
  zf::test::twin::both("the attention twin", [](auto b) {
    std::vector<sh::attention_case> cases(std::begin(k_edges), std::end(k_edges));
    for (const auto& c : sh::attention_cases) {  // on a GPU the bench rows too
      if ((c.use & sh::check) || !decltype(b)::simulated) cases.push_back(c);
    }
    for (const auto& c : cases) {
      CAPTURE(c.tq);
      CAPTURE(c.offset);
      CAPTURE(c.n_head);
      CAPTURE(c.n_kv_head);
      CAPTURE(c.head_dim);
      check_case(b, c);
    }
  });
}
