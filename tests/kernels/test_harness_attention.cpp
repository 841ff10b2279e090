// The kernel harness, attention families: dense causal attention (forward + backward, multi-head
// and grouped-query, training shapes and chunks at a KV offset) on a fused Llama-style row
// [q | k | v] with a padded output, and paged attention (direct and gather paths, scrambled block
// tables), against ref::attention_forward / attention_backward over the check rows of shapes.hpp.
//
// Tolerance: |got - want| <= rtol |want| + atol max|want| (harness.hpp `near`).
//   output                          rtol    atol
//   out, dq, dk, dv                 1e-4    1e-5
//   att (probabilities)             1e-4    1e-7
//   paged out                       1e-5    1e-6
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "harness.hpp"
#include "kernels/attention.hpp"
#include "kernels/paged_attention.hpp"
#include "shapes.hpp"

using namespace zf::kernels;
namespace ref = zf::test::ref;
namespace sh = zf::test::shapes;
using zf::test::columns;
using zf::test::near;
using zf::test::randn;
using zf::test::tol;

namespace {

constexpr tol k_attention{1e-4, 1e-5}, k_att{1e-4, 1e-7}, k_paged{1e-5, 1e-6};

void check_attention(const sh::attention_case& c) {
  const int nh = c.n_head, nkv = c.n_kv_head > 0 ? c.n_kv_head : nh, hd = c.head_dim;
  const int tq = c.tq, off = c.offset, tk = off + tq;
  const int Q = nh * hd, KV = nkv * hd, ld = Q + 2 * KV, ldo = Q + 3;
  const attention_shape s{tq, tk, off, nh, hd, ld, ld, ld, ldo, c.n_kv_head};
  // Fused rows of the whole sequence; this chunk's queries are its last tq rows.
  auto qkv = randn(static_cast<std::size_t>(tk) * ld, 1 + tq + off, 1.5f);
  const float* q = qkv.data() + static_cast<std::size_t>(off) * ld;
  const float *k = qkv.data() + Q, *v = qkv.data() + Q + KV;
  std::vector<float> out(static_cast<std::size_t>(tq) * ldo, 7.0f);
  std::vector<float> att(static_cast<std::size_t>(nh) * tq * tk, std::nanf(""));
  attention_forward(s, q, k, v, out.data(), att.data());
  ref::dvec wout, watt;
  ref::attention_forward(s, q, k, v, wout, watt);
  CHECK(near(columns(out, tq, ldo, 0, Q), wout, k_attention));
  CHECK(near(att, watt, k_att));
  int padding_touched = 0;
  for (int i = 0; i < tq; ++i) {
    for (int col = Q; col < ldo; ++col) padding_touched += out[i * ldo + col] != 7.0f;
  }
  CHECK(padding_touched == 0);

  // Backward into a NaN-filled fused buffer: every head column must be overwritten.
  auto dout = randn(static_cast<std::size_t>(tq) * ldo, 2 + tq);
  std::vector<float> dqkv(qkv.size(), std::nanf("")), datt(att.size(), std::nanf(""));
  float* dq = dqkv.data() + static_cast<std::size_t>(off) * ld;
  attention_backward(s, q, k, v, att.data(), dout.data(), datt.data(), dq, dqkv.data() + Q,
                     dqkv.data() + Q + KV);
  ref::dvec wdq, wdk, wdv;
  ref::attention_backward(s, q, k, v, dout.data(), wdq, wdk, wdv);
  const auto dq_all = columns(dqkv, tk, ld, 0, Q);
  const std::vector<float> dq_chunk(dq_all.begin() + static_cast<std::ptrdiff_t>(off) * Q,
                                    dq_all.end());
  CHECK(near(dq_chunk, wdq, k_attention));
  CHECK(near(columns(dqkv, tk, ld, Q, KV), wdk, k_attention));
  CHECK(near(columns(dqkv, tk, ld, Q + KV, KV), wdv, k_attention));
}

}  // namespace

TEST_CASE("harness: attention forward and backward, MHA and GQA, with KV offsets") {
  for (const auto& c : sh::attention_cases) {
    if (!(c.use & sh::check)) continue;
    CAPTURE(c.tq);
    CAPTURE(c.offset);
    CAPTURE(c.n_head);
    CAPTURE(c.n_kv_head);
    CAPTURE(c.head_dim);
    check_attention(c);
  }
}

TEST_CASE("harness: paged attention, direct and gather paths, scrambled block tables") {
  for (const auto& c : sh::paged_cases) {
    if (!(c.use & sh::check)) continue;
    CAPTURE(c.tq);
    CAPTURE(c.start);
    CAPTURE(c.n_head);
    CAPTURE(c.n_kv_head);
    CAPTURE(c.head_dim);
    CAPTURE(c.block_size);
    const auto r =
        zf::test::run_paged(c.tq, c.start, c.n_head, c.n_kv_head, c.head_dim, c.block_size);
    CHECK(near(r.out, r.want, k_paged));
  }
}
