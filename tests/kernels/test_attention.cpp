#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/attention.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;

namespace {

// Double-precision causal attention; out/dq/dk/dv are dense [rows, C], att is [nh, tq, tk].
struct ref_attention {
  attention_shape s;
  int C() const { return s.n_head * s.head_dim; }

  void forward(const float* q, const float* k, const float* v, std::vector<double>& out,
               std::vector<double>& att) const {
    const int C = this->C(), hd = s.head_dim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    out.assign(static_cast<std::size_t>(s.tq) * C, 0.0);
    att.assign(static_cast<std::size_t>(s.n_head) * s.tq * s.tk, 0.0);
    for (int h = 0; h < s.n_head; ++h) {
      for (int i = 0; i < s.tq; ++i) {
        const int L = s.offset + i + 1;
        double* a = &att[(static_cast<std::size_t>(h) * s.tq + i) * s.tk];
        double mx = -INFINITY;
        for (int j = 0; j < L; ++j) {
          double d = 0.0;
          for (int e = 0; e < hd; ++e) {
            d += static_cast<double>(q[i * s.ldq + h * hd + e]) * k[j * s.ldk + h * hd + e];
          }
          a[j] = d * scale;
          mx = std::max(mx, a[j]);
        }
        double sum = 0.0;
        for (int j = 0; j < L; ++j) sum += (a[j] = std::exp(a[j] - mx));
        for (int j = 0; j < L; ++j) a[j] /= sum;
        for (int e = 0; e < hd; ++e) {
          double o = 0.0;
          for (int j = 0; j < L; ++j) o += a[j] * v[j * s.ldv + h * hd + e];
          out[i * C + h * hd + e] = o;
        }
      }
    }
  }

  void backward(const float* q, const float* k, const float* v, const float* dout,
                std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) const {
    std::vector<double> out, att;
    forward(q, k, v, out, att);
    const int C = this->C(), hd = s.head_dim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    dq.assign(static_cast<std::size_t>(s.tq) * C, 0.0);
    dk.assign(static_cast<std::size_t>(s.tk) * C, 0.0);
    dv.assign(static_cast<std::size_t>(s.tk) * C, 0.0);
    std::vector<double> da(s.tk);
    for (int h = 0; h < s.n_head; ++h) {
      for (int i = 0; i < s.tq; ++i) {
        const int L = s.offset + i + 1;
        const double* a = &att[(static_cast<std::size_t>(h) * s.tq + i) * s.tk];
        double dot = 0.0;
        for (int j = 0; j < L; ++j) {
          double d = 0.0;
          for (int e = 0; e < hd; ++e) {
            const double g = dout[i * s.ldo + h * hd + e];
            d += g * v[j * s.ldv + h * hd + e];
            dv[j * C + h * hd + e] += a[j] * g;
          }
          da[j] = d;
          dot += a[j] * d;
        }
        for (int j = 0; j < L; ++j) {
          const double dp = a[j] * (da[j] - dot) * scale;
          for (int e = 0; e < hd; ++e) {
            dq[i * C + h * hd + e] += dp * k[j * s.ldk + h * hd + e];
            dk[j * C + h * hd + e] += dp * q[i * s.ldq + h * hd + e];
          }
        }
      }
    }
  }
};

// Columns [col0, col0 + C) of a [rows, ld] buffer, densely.
std::vector<float> columns(const std::vector<float>& buf, int rows, int ld, int col0, int C) {
  std::vector<float> out(static_cast<std::size_t>(rows) * C);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < C; ++c) out[r * C + c] = buf[static_cast<std::size_t>(r) * ld + col0 + c];
  }
  return out;
}

}  // namespace

// T = 300 spans three query blocks of the kernel (128 rows each), including a partial one.
TEST_CASE("attention forward/backward on a fused [t, 3C] buffer, several query blocks") {
  const int T = 300, nh = 3, hd = 8, C = nh * hd, ld3 = 3 * C, ldo = C + 5;
  attention_shape s{T, T, 0, nh, hd, ld3, ld3, ld3, ldo};
  auto qkv = randn(static_cast<std::size_t>(T) * ld3, 1, 1.5f);
  const float *q = qkv.data(), *k = q + C, *v = q + 2 * C;
  std::vector<float> out(static_cast<std::size_t>(T) * ldo, 7.0f);
  std::vector<float> att(static_cast<std::size_t>(nh) * T * T, std::nanf(""));
  attention_forward(s, q, k, v, out.data(), att.data());

  ref_attention ref{s};
  std::vector<double> wout, watt;
  ref.forward(q, k, v, wout, watt);
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
  ref.backward(q, k, v, dout.data(), wdq, wdk, wdv);
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
  ref_attention ref{c};
  std::vector<double> wdq, wdk, wdv;
  ref.backward(q.data() + off * C, k.data(), v.data(), dout.data(), wdq, wdk, wdv);
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
