#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "harness.hpp"
#include "kernels/attention.hpp"
#include "reference.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::columns;
using zf::test::randn;
namespace ref = zf::test::ref;

// T = 300 spans three query blocks of the kernel (128 rows each), including a partial one.
TEST_CASE("attention forward/backward on a fused [t, 3C] buffer, several query blocks") {
  const int T = 300, nh = 3, hd = 8, C = nh * hd, ld3 = 3 * C, ldo = C + 5;
  attention_shape s{T, T, 0, nh, hd, ld3, ld3, ld3, ldo};
  auto qkv = randn(static_cast<std::size_t>(T) * ld3, 1, 1.5f);
  const float *q = qkv.data(), *k = q + C, *v = q + 2 * C;
  std::vector<float> out(static_cast<std::size_t>(T) * ldo, 7.0f);
  std::vector<float> att(static_cast<std::size_t>(nh) * T * T, std::nanf(""));
  attention_forward(s, q, k, v, out.data(), att.data());

  std::vector<double> wout, watt;
  ref::attention_forward(s, q, k, v, wout, watt);
  CHECK(all_close(columns(out, T, ldo, 0, C).data(), wout.data(), wout.size(), 1e-4, 1e-5));
  CHECK(all_close(att.data(), watt.data(), att.size(), 1e-4, 1e-7));
  int masked_nonzero = 0, padding_touched = 0;
  for (int h = 0; h < nh; ++h) {
    for (int i = 0; i < T; ++i) {
      for (int j = i + 1; j < T; ++j) masked_nonzero += att[(h * T + i) * T + j] != 0.0f;
    }
  }
  for (int i = 0; i < T; ++i) {
    for (int c = C; c < ldo; ++c) padding_touched += out[i * ldo + c] != 7.0f;
  }
  CHECK(masked_nonzero == 0);
  CHECK(padding_touched == 0);

  // Backward: dq/dk/dv land in a fused buffer prefilled with NaN, so every head column must be
  // overwritten; datt is scratch, also prefilled with NaN.
  auto dout = randn(static_cast<std::size_t>(T) * ldo, 2);
  std::vector<float> dqkv(qkv.size(), std::nanf(""));
  std::vector<float> datt(att.size(), std::nanf(""));
  attention_backward(s, q, k, v, att.data(), dout.data(), datt.data(), dqkv.data(), dqkv.data() + C,
                     dqkv.data() + 2 * C);
  std::vector<double> wdq, wdk, wdv;
  ref::attention_backward(s, q, k, v, dout.data(), wdq, wdk, wdv);
  CHECK(all_close(columns(dqkv, T, ld3, 0, C).data(), wdq.data(), wdq.size(), 1e-4, 1e-5));
  CHECK(all_close(columns(dqkv, T, ld3, C, C).data(), wdk.data(), wdk.size(), 1e-4, 1e-5));
  CHECK(all_close(columns(dqkv, T, ld3, 2 * C, C).data(), wdv.data(), wdv.size(), 1e-4, 1e-5));
}

TEST_CASE("attention with a KV offset: chunked prefill and decode equal rows of the full pass") {
  const int T = 300, nh = 2, hd = 16, C = nh * hd;
  auto q = randn(static_cast<std::size_t>(T) * C, 3), k = randn(static_cast<std::size_t>(T) * C, 4);
  auto v = randn(static_cast<std::size_t>(T) * C, 5);
  attention_shape full{T, T, 0, nh, hd, C, C, C, C};
  std::vector<float> out(static_cast<std::size_t>(T) * C);
  std::vector<float> att(static_cast<std::size_t>(nh) * T * T);
  attention_forward(full, q.data(), k.data(), v.data(), out.data(), att.data());

  // Decode: one query at absolute position p against keys 0..p.
  for (int p : {0, 1, 63, 64, 127, 128, 129, 200, 299}) {
    CAPTURE(p);
    attention_shape d{1, p + 1, p, nh, hd, C, C, C, C};
    std::vector<float> o(C), a(static_cast<std::size_t>(nh) * (p + 1), std::nanf(""));
    attention_forward(d, q.data() + p * C, k.data(), v.data(), o.data(), a.data());
    CHECK(all_close(o.data(), out.data() + p * C, C, 1e-5, 1e-6));
    for (int h = 0; h < nh; ++h) {
      CHECK(all_close(a.data() + h * (p + 1), att.data() + (h * T + p) * T, p + 1, 1e-5, 1e-8));
    }
  }

  // Chunked prefill: queries 80..299 against keys 0..299 (blocks start at 80 and 208).
  const int off = 80, tq = T - off;
  attention_shape c{tq, T, off, nh, hd, C, C, C, C};
  std::vector<float> o(static_cast<std::size_t>(tq) * C);
  std::vector<float> a(static_cast<std::size_t>(nh) * tq * T, std::nanf(""));
  attention_forward(c, q.data() + off * C, k.data(), v.data(), o.data(), a.data());
  CHECK(all_close(o.data(), out.data() + off * C, o.size(), 1e-5, 1e-6));
  int masked_nonzero = 0;
  for (int h = 0; h < nh; ++h) {
    for (int i = 0; i < tq; ++i) {
      for (int j = off + i + 1; j < T; ++j) masked_nonzero += a[(h * tq + i) * T + j] != 0.0f;
    }
  }
  CHECK(masked_nonzero == 0);

  // Backward with the offset against the double reference; dk/dv cover all T keys.
  auto dout = randn(static_cast<std::size_t>(tq) * C, 6);
  std::vector<float> dq(q.size(), std::nanf("")), dk(k.size(), std::nanf(""));
  std::vector<float> dv(v.size(), std::nanf("")), datt(a.size(), std::nanf(""));
  attention_backward(c, q.data() + off * C, k.data(), v.data(), a.data(), dout.data(), datt.data(),
                     dq.data(), dk.data(), dv.data());
  std::vector<double> wdq, wdk, wdv;
  ref::attention_backward(c, q.data() + off * C, k.data(), v.data(), dout.data(), wdq, wdk, wdv);
  CHECK(all_close(dq.data(), wdq.data(), wdq.size(), 1e-4, 1e-5));
  CHECK(all_close(dk.data(), wdk.data(), wdk.size(), 1e-4, 1e-5));
  CHECK(all_close(dv.data(), wdv.data(), wdv.size(), 1e-4, 1e-5));
}

TEST_CASE("attention backward agrees with finite differences (training and offset shapes)") {
  const int nh = 2, hd = 4, C = nh * hd;
  for (int off : {0, 3}) {
    CAPTURE(off);
    const int tq = off == 0 ? 6 : 3, tk = off + tq;
    attention_shape s{tq, tk, off, nh, hd, C, C, C, C};
    auto q = randn(static_cast<std::size_t>(tq) * C, 10 + off);
    auto k = randn(static_cast<std::size_t>(tk) * C, 20 + off);
    auto v = randn(static_cast<std::size_t>(tk) * C, 30 + off);
    auto wout = randn(static_cast<std::size_t>(tq) * C, 40 + off);
    std::vector<float> out(static_cast<std::size_t>(tq) * C);
    std::vector<float> att(static_cast<std::size_t>(nh) * tq * tk), datt(att.size());
    auto loss = [&] {
      attention_forward(s, q.data(), k.data(), v.data(), out.data(), att.data());
      return zf::test::weighted_sum(out.data(), wout.data(), out.size());
    };
    loss();
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    attention_backward(s, q.data(), k.data(), v.data(), att.data(), wout.data(), datt.data(),
                       dq.data(), dk.data(), dv.data());
    zf::test::check_grad("dq", q.data(), q.size(), dq.data(), loss, 1e-2f, 1e-2, 1e-3);
    zf::test::check_grad("dk", k.data(), k.size(), dk.data(), loss, 1e-2f, 1e-2, 1e-3);
    zf::test::check_grad("dv", v.data(), v.size(), dv.data(), loss, 1e-2f, 1e-2, 1e-3);
  }
}

namespace {

// Llama's repeat_kv: kv heads [rows, ld] with n_kv heads -> dense [rows, n_head * hd] where query
// head h gets kv head h / (n_head / n_kv).
std::vector<float> repeat_kv(const float* x, int rows, int ld, int n_head, int n_kv, int hd) {
  const int C = n_head * hd, group = n_head / n_kv;
  std::vector<float> out(static_cast<std::size_t>(rows) * C);
  for (int r = 0; r < rows; ++r) {
    for (int h = 0; h < n_head; ++h) {
      for (int e = 0; e < hd; ++e) out[r * C + h * hd + e] = x[r * ld + (h / group) * hd + e];
    }
  }
  return out;
}

// The adjoint of repeat_kv: sums the gradients of a group's copies into its kv head.
std::vector<double> sum_groups(const std::vector<double>& d, int rows, int n_head, int n_kv,
                               int hd) {
  const int C = n_head * hd, KV = n_kv * hd, group = n_head / n_kv;
  std::vector<double> out(static_cast<std::size_t>(rows) * KV, 0.0);
  for (int r = 0; r < rows; ++r) {
    for (int h = 0; h < n_head; ++h) {
      for (int e = 0; e < hd; ++e) out[r * KV + (h / group) * hd + e] += d[r * C + h * hd + e];
    }
  }
  return out;
}

// One GQA shape on a fused Llama-style row [q (nh heads) | k (nkv) | v (nkv)] of a T-row
// sequence, queries [off, T): forward and backward against multi-head attention in double on
// repeat_kv-expanded k/v.
void check_gqa(int T, int off, int nh, int nkv, int hd, unsigned seed) {
  CAPTURE(T);
  CAPTURE(off);
  CAPTURE(nh);
  CAPTURE(nkv);
  const int Q = nh * hd, KV = nkv * hd, ld = Q + 2 * KV, tq = T - off, ldo = Q + 3;
  attention_shape s{.tq = tq,
                    .tk = T,
                    .offset = off,
                    .n_head = nh,
                    .head_dim = hd,
                    .ldq = ld,
                    .ldk = ld,
                    .ldv = ld,
                    .ldo = ldo,
                    .n_kv_head = nkv};
  auto qkv = randn(static_cast<std::size_t>(T) * ld, seed, 1.5f);
  const float* q = qkv.data() + static_cast<std::size_t>(off) * ld;
  const float *k = qkv.data() + Q, *v = qkv.data() + Q + KV;
  std::vector<float> out(static_cast<std::size_t>(tq) * ldo, 7.0f);
  std::vector<float> att(static_cast<std::size_t>(nh) * tq * T, std::nanf(""));
  attention_forward(s, q, k, v, out.data(), att.data());

  auto ke = repeat_kv(k, T, ld, nh, nkv, hd), ve = repeat_kv(v, T, ld, nh, nkv, hd);
  const attention_shape mha{tq, T, off, nh, hd, ld, Q, Q, ldo};
  std::vector<double> wout, watt;
  ref::attention_forward(mha, q, ke.data(), ve.data(), wout, watt);
  CHECK(all_close(columns(out, tq, ldo, 0, Q).data(), wout.data(), wout.size(), 1e-4, 1e-5));
  CHECK(all_close(att.data(), watt.data(), att.size(), 1e-4, 1e-7));
  int padding_touched = 0;
  for (int i = 0; i < tq; ++i) {
    for (int c = Q; c < ldo; ++c) padding_touched += out[i * ldo + c] != 7.0f;
  }
  CHECK(padding_touched == 0);

  // Backward into a NaN-filled fused buffer: every q row of the chunk and every k/v row must be
  // overwritten (rows [0, off) of the q part belong to earlier chunks and stay NaN).
  auto dout = randn(static_cast<std::size_t>(tq) * ldo, seed + 1);
  std::vector<float> dqkv(qkv.size(), std::nanf("")), datt(att.size(), std::nanf(""));
  float* dq = dqkv.data() + static_cast<std::size_t>(off) * ld;
  attention_backward(s, q, k, v, att.data(), dout.data(), datt.data(), dq, dqkv.data() + Q,
                     dqkv.data() + Q + KV);
  std::vector<double> wdq, wdke, wdve;
  ref::attention_backward(mha, q, ke.data(), ve.data(), dout.data(), wdq, wdke, wdve);
  auto wdk = sum_groups(wdke, T, nh, nkv, hd), wdv = sum_groups(wdve, T, nh, nkv, hd);
  std::vector<float> dqd = columns(dqkv, T, ld, 0, Q);
  CHECK(all_close(dqd.data() + static_cast<std::size_t>(off) * Q, wdq.data(), wdq.size(), 1e-4,
                  1e-5));
  CHECK(all_close(columns(dqkv, T, ld, Q, KV).data(), wdk.data(), wdk.size(), 1e-4, 1e-5));
  CHECK(all_close(columns(dqkv, T, ld, Q + KV, KV).data(), wdv.data(), wdv.size(), 1e-4, 1e-5));
}

}  // namespace

TEST_CASE("GQA attention equals multi-head attention on repeat_kv-expanded k/v") {
  check_gqa(300, 0, 4, 2, 8, 70);   // three query blocks, groups of 2
  check_gqa(300, 80, 4, 1, 8, 71);  // chunk with a KV offset, one kv head for all (MQA)
  check_gqa(37, 5, 6, 3, 12, 72);   // head_dim not a multiple of 8
}

TEST_CASE("GQA attention backward agrees with finite differences") {
  const int hd = 4;
  for (int nkv : {1, 2}) {
    for (int off : {0, 3}) {
      CAPTURE(nkv);
      CAPTURE(off);
      const int nh = 4, Q = nh * hd, KV = nkv * hd, tq = off == 0 ? 6 : 3, tk = off + tq;
      attention_shape s{tq, tk, off, nh, hd, Q, KV, KV, Q, nkv};
      auto q = randn(static_cast<std::size_t>(tq) * Q, 80 + off + nkv);
      auto k = randn(static_cast<std::size_t>(tk) * KV, 90 + off + nkv);
      auto v = randn(static_cast<std::size_t>(tk) * KV, 100 + off + nkv);
      auto wout = randn(static_cast<std::size_t>(tq) * Q, 110 + off + nkv);
      std::vector<float> out(static_cast<std::size_t>(tq) * Q);
      std::vector<float> att(static_cast<std::size_t>(nh) * tq * tk), datt(att.size());
      auto loss = [&] {
        attention_forward(s, q.data(), k.data(), v.data(), out.data(), att.data());
        return zf::test::weighted_sum(out.data(), wout.data(), out.size());
      };
      loss();
      std::vector<float> dq(q.size()), dk(k.size(), std::nanf("")), dv(v.size(), std::nanf(""));
      attention_backward(s, q.data(), k.data(), v.data(), att.data(), wout.data(), datt.data(),
                         dq.data(), dk.data(), dv.data());
      zf::test::check_grad("dq", q.data(), q.size(), dq.data(), loss, 1e-2f, 1e-2, 1e-3);
      zf::test::check_grad("dk", k.data(), k.size(), dk.data(), loss, 1e-2f, 1e-2, 1e-3);
      zf::test::check_grad("dv", v.data(), v.size(), dv.data(), loss, 1e-2f, 1e-2, 1e-3);
    }
  }
}

TEST_CASE("n_kv_head = 0 and n_kv_head = n_head give bit-identical attention") {
  const int T = 300, nh = 3, hd = 8, C = nh * hd;
  auto q = randn(static_cast<std::size_t>(T) * C, 120), k = randn(q.size(), 121);
  auto v = randn(q.size(), 122);
  for (int off : {0, 80}) {
    CAPTURE(off);
    const int tq = T - off;
    const float* qo = q.data() + static_cast<std::size_t>(off) * C;
    attention_shape s0{tq, T, off, nh, hd, C, C, C, C};  // n_kv_head defaults to 0
    attention_shape s1 = s0;
    s1.n_kv_head = nh;
    CHECK(s0.n_kv_head == 0);
    std::vector<float> out0(static_cast<std::size_t>(tq) * C), out1(out0.size());
    std::vector<float> att0(static_cast<std::size_t>(nh) * tq * T), att1(att0.size());
    attention_forward(s0, qo, k.data(), v.data(), out0.data(), att0.data());
    attention_forward(s1, qo, k.data(), v.data(), out1.data(), att1.data());
    CHECK(out0 == out1);
    CHECK(att0 == att1);
    auto dout = randn(out0.size(), 123);
    // NaN prefill: both must overwrite (beta = 0) every head, not accumulate into it.
    const float nan = std::nanf("");
    std::vector<float> datt(att0.size());
    std::vector<float> dq0(out0.size(), nan), dk0(k.size(), nan), dv0(v.size(), nan);
    std::vector<float> dq1(out0.size(), nan), dk1(k.size(), nan), dv1(v.size(), nan);
    attention_backward(s0, qo, k.data(), v.data(), att0.data(), dout.data(), datt.data(),
                       dq0.data(), dk0.data(), dv0.data());
    attention_backward(s1, qo, k.data(), v.data(), att1.data(), dout.data(), datt.data(),
                       dq1.data(), dk1.data(), dv1.data());
    CHECK(dq0 == dq1);
    CHECK(dk0 == dk1);
    CHECK(dv0 == dv1);
  }
}
