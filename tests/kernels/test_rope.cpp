// RoPE backward: the inverse rotation undoes the forward, equals its transpose (finite
// differences), and touches only the head columns of strided rows.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "grad_check.hpp"
#include "kernels/rope.hpp"

using namespace zf::kernels;
using zf::test::all_close;
using zf::test::randn;

namespace {

struct rope_fixture {
  static constexpr int n_pos = 64;
  int head_dim;
  std::vector<float> cos, sin;

  explicit rope_fixture(int hd)
      : head_dim(hd), cos(static_cast<std::size_t>(n_pos) * hd / 2), sin(cos.size()) {
    std::vector<double> inv_freq(hd / 2);
    for (int i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / hd);
    rope_tables(n_pos, hd, inv_freq.data(), cos.data(), sin.data());
  }
};

}  // namespace

TEST_CASE("rope backward inverts rope forward and leaves other columns alone") {
  // Rows of a strided buffer with padding: n_head heads then 5 untouched columns.
  const int hd = 16, nh = 3, n = 5, ld = nh * hd + 5;
  rope_fixture f(hd);
  const int pos[n] = {0, 1, 17, 40, 63};
  auto x = randn(static_cast<std::size_t>(n) * ld, 11, 2.0f);
  auto y = x;
  rope_forward(y.data(), ld, n, pos, nh, hd, f.cos.data(), f.sin.data());
  int rotated = 0;  // rows at positions > 0 did change
  for (int c = ld; c < n * ld; ++c) rotated += y[c] != x[c];
  CHECK(rotated > (n - 1) * nh * hd / 2);
  rope_backward(y.data(), ld, n, pos, nh, hd, f.cos.data(), f.sin.data());
  CHECK(all_close(y.data(), x.data(), y.size(), 0.0, 1e-6));
  int padding_touched = 0;
  for (int r = 0; r < n; ++r) {
    for (int c = nh * hd; c < ld; ++c) padding_touched += y[r * ld + c] != x[r * ld + c];
  }
  CHECK(padding_touched == 0);
  // Position 0 is the identity in both directions.
  for (int c = 0; c < ld; ++c) CHECK(y[c] == x[c]);
}

TEST_CASE("rope backward is the gradient of rope forward (finite differences)") {
  // The kv heads of a fused [q | k] row: rotate n_kv heads starting at a column offset.
  for (int hd : {4, 10}) {
    CAPTURE(hd);
    const int nq = 2, nkv = 1, ld = (nq + nkv) * hd, n = 4;
    rope_fixture f(hd);
    const int pos[n] = {3, 0, 9, 30};
    auto x = randn(static_cast<std::size_t>(n) * ld, 20 + hd);
    auto w = randn(x.size(), 30 + hd);  // loss = sum(w * rope(x)): dy = w
    std::vector<float> y(x.size());
    auto loss = [&] {
      y = x;
      rope_forward(y.data(), ld, n, pos, nq, hd, f.cos.data(), f.sin.data());
      rope_forward(y.data() + nq * hd, ld, n, pos, nkv, hd, f.cos.data(), f.sin.data());
      return zf::test::weighted_sum(y.data(), w.data(), y.size());
    };
    std::vector<float> dx = w;
    rope_backward(dx.data(), ld, n, pos, nq, hd, f.cos.data(), f.sin.data());
    rope_backward(dx.data() + nq * hd, ld, n, pos, nkv, hd, f.cos.data(), f.sin.data());
    zf::test::check_grad("rope dx", x.data(), x.size(), dx.data(), loss, 1e-2f, 1e-3, 1e-4);
  }
}
