// GPTQ and LoRC (runtime/quant): the Hessian accumulator against X^T X in double; GPTQ is
// round-to-nearest bit for bit when no error can propagate (a diagonal Hessian), lowers the
// layer's output error on correlated inputs (calibration and held-out), zeroes dead inputs,
// damps a singular Hessian and refuses bad shapes; LoRC recovers an exactly low-rank error and
// its residual shrinks with the rank.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/quant.hpp"
#include "runtime/core/error.hpp"
#include "runtime/quant/gptq.hpp"
#include "runtime/quant/lorc.hpp"

using namespace zf;
namespace k = zf::kernels;

namespace {

std::vector<float> normal(std::size_t n, unsigned seed, float sd = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Inputs whose K features are correlated, as a layer's activations are: x = z @ M with M a
// random mixing whose columns share a common component.
std::vector<float> correlated(int rows, int K, unsigned seed) {
  const auto z = normal(std::size_t(rows) * K, seed);
  const auto m = normal(std::size_t(K) * K, 77, 0.3f);
  std::vector<float> x(std::size_t(rows) * K, 0.0f);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < K; ++i) {
      const float zi = z[std::size_t(r) * K + i];
      for (int j = 0; j < K; ++j)
        x[std::size_t(r) * K + j] +=
            zi * (m[std::size_t(i) * K + j] + (i == j ? 1.0f : 0.0f) + (i % 4 == 0 ? 0.5f : 0.0f));
    }
  return x;
}

struct qbuf {
  std::vector<std::uint8_t> data, zeros;
  std::vector<float> scales;
  k::qmatrix q;
  qbuf(k::qformat f, int K, int n, int group, bool asym)
      : data(k::packed_row_bytes(f, K) * n),
        zeros(asym ? std::size_t(n) * (K / group) : 1),
        scales(std::size_t(n) * (K / group)) {
    q = {f, n, K, group, data.data(), scales.data(), asym ? zeros.data() : nullptr};
  }
};

// ||x @ (w - dequantize(q))||_F / ||x @ w||_F over rows of x [rows, K], w [K, n].
double output_err(const std::vector<float>& x, int rows, const std::vector<float>& w,
                  const k::qmatrix& q) {
  std::vector<float> dq(w.size());
  k::dequantize(q, dq.data());
  double num = 0, den = 0;
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < q.n; ++o) {
      double a = 0, b = 0;
      for (int j = 0; j < q.k; ++j) {
        const double xv = x[std::size_t(r) * q.k + j];
        a += xv * w[std::size_t(j) * q.n + o];
        b += xv * dq[std::size_t(j) * q.n + o];
      }
      num += (a - b) * (a - b);
      den += a * a;
    }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("gptq: the Hessian is 2/N X^T X, accumulated over batches") {
  const int K = 64, rows = 40;
  const auto x = normal(std::size_t(rows) * K, 1);
  quant::hessian h(K);
  h.add(x.data(), 25);
  h.add(x.data() + 25 * K, rows - 25);
  const auto m = h.matrix();
  CHECK(h.rows() == rows);
  double worst = 0;
  for (int a = 0; a < K; ++a)
    for (int b = 0; b < K; ++b) {
      double want = 0;
      for (int r = 0; r < rows; ++r)
        want += double(x[std::size_t(r) * K + a]) * x[std::size_t(r) * K + b];
      worst = std::max(worst, std::abs(m[std::size_t(a) * K + b] - 2.0 * want / rows));
    }
  CHECK(worst < 1e-5);
}

TEST_CASE("gptq: with a diagonal Hessian it is round-to-nearest bit for bit") {
  const int K = 128, n = 16;
  const auto w = normal(std::size_t(K) * n, 2, 0.1f);
  std::vector<double> h(std::size_t(K) * K, 0.0);
  std::mt19937 g(3);
  for (int j = 0; j < K; ++j) h[std::size_t(j) * K + j] = 0.5 + double(g() % 1000) / 100.0;
  for (auto [f, asym] :
       {std::pair{k::qformat::int4, true}, std::pair{k::qformat::int4, false},
        std::pair{k::qformat::int8, false}, std::pair{k::qformat::fp4_e2m1, false}})
    for (bool act_order : {false, true}) {
      const std::string name = k::qinfo(f).name;
      CAPTURE(name);
      CAPTURE(act_order);
      qbuf rtn(f, K, n, 32, asym), gq(f, K, n, 32, asym);
      k::quantize_rtn(f, w.data(), n, 1, K, n, 32, asym, false, rtn.data.data(), rtn.scales.data(),
                      asym ? rtn.zeros.data() : nullptr);
      quant::gptq_options o;
      o.act_order = act_order;
      o.block = 48;  // blocks that do not divide K: the lazy update's edges
      quant::gptq_quantize(f, w.data(), n, 1, K, n, 32, asym, false, h, o, gq.data.data(),
                           gq.scales.data(), asym ? gq.zeros.data() : nullptr);
      CHECK(gq.data == rtn.data);
      CHECK(gq.scales == rtn.scales);
      CHECK(gq.zeros == rtn.zeros);
    }
}

TEST_CASE("gptq: lowers the output error of round-to-nearest on correlated inputs") {
  const int K = 128, n = 48, rows = 512;
  const auto x = correlated(rows, K, 4), held = correlated(rows, K, 5);
  const auto w = normal(std::size_t(K) * n, 6, 0.1f);
  quant::hessian h(K);
  h.add(x.data(), rows);
  const auto H = h.matrix();
  for (auto [f, asym] : {std::pair{k::qformat::int4, true}, std::pair{k::qformat::fp4_e2m1, false},
                         std::pair{k::qformat::int8, false}})
    for (bool act_order : {false, true}) {
      const std::string name = k::qinfo(f).name;
      CAPTURE(name);
      CAPTURE(act_order);
      qbuf rtn(f, K, n, 32, asym), gq(f, K, n, 32, asym);
      k::quantize_rtn(f, w.data(), n, 1, K, n, 32, asym, false, rtn.data.data(), rtn.scales.data(),
                      asym ? rtn.zeros.data() : nullptr);
      quant::gptq_options o;
      o.act_order = act_order;
      const auto rep =
          quant::gptq_quantize(f, w.data(), n, 1, K, n, 32, asym, false, H, o, gq.data.data(),
                               gq.scales.data(), asym ? gq.zeros.data() : nullptr);
      CHECK(rep.dead == 0);
      const double er = output_err(x, rows, w, rtn.q), eg = output_err(x, rows, w, gq.q);
      const double hr = output_err(held, rows, w, rtn.q), hg = output_err(held, rows, w, gq.q);
      MESSAGE(name << std::string(act_order ? " act-order" : "") << ": output error RTN " << er
                   << " GPTQ " << eg << "; held-out " << hr << " -> " << hg);
      CHECK(eg < 0.8 * er);
      CHECK(hg < 0.8 * hr);
    }
}

TEST_CASE("gptq: dead inputs are zeroed and a rank-deficient Hessian is damped") {
  const int K = 64, n = 8, rows = 16;  // 16 rows: H has rank 16 of 64
  auto x = normal(std::size_t(rows) * K, 7);
  for (int r = 0; r < rows; ++r) x[std::size_t(r) * K + 5] = 0;  // input 5 never fires
  const auto w = normal(std::size_t(K) * n, 8, 0.1f);
  quant::hessian h(K);
  h.add(x.data(), rows);
  qbuf gq(k::qformat::int8, K, n, 32, false);
  const auto rep = quant::gptq_quantize(k::qformat::int8, w.data(), n, 1, K, n, 32, false, false,
                                        h.matrix(), {}, gq.data.data(), gq.scales.data(), nullptr);
  CHECK(rep.dead == 1);
  CHECK(rep.damp == 0.01);
  std::vector<float> dq(w.size());
  k::dequantize(gq.q, dq.data());
  for (int o = 0; o < n; ++o) CHECK(dq[5 * std::size_t(n) + o] == 0.0f);
  CHECK(output_err(x, rows, w, gq.q) < 0.01);
  // shapes refused as round-to-nearest refuses them; a Hessian of the wrong size by name
  CHECK_THROWS_AS(quant::gptq_quantize(k::qformat::int4, w.data(), n, 1, K, n, 48, false, false,
                                       h.matrix(), {}, gq.data.data(), gq.scales.data(), nullptr),
                  std::invalid_argument);
  try {
    quant::gptq_quantize(k::qformat::int8, w.data(), n, 1, K, n, 32, false, false,
                         std::vector<double>(10), {}, gq.data.data(), gq.scales.data(), nullptr);
    FAIL("accepted a 10-entry Hessian");
  } catch (const zf::error& e) {
    CHECK(std::string(e.what()).find("not 64 x 64") != std::string::npos);
  }
}

TEST_CASE("lorc: recovers an exactly low-rank error and shrinks the residual with the rank") {
  const int K = 64, n = 40;
  const auto u = normal(std::size_t(K) * 2, 9), v = normal(std::size_t(2) * n, 10);
  std::vector<float> e(std::size_t(K) * n, 0.0f);  // rank 2
  for (int j = 0; j < K; ++j)
    for (int o = 0; o < n; ++o)
      for (int c = 0; c < 2; ++c)
        e[std::size_t(j) * n + o] += u[std::size_t(j) * 2 + c] * v[std::size_t(c) * n + o];
  const auto lr = quant::best_low_rank(e.data(), K, n, 2);
  CHECK(lr.rank == 2);
  double num = 0, den = 0;
  for (int j = 0; j < K; ++j)
    for (int o = 0; o < n; ++o) {
      double ab = 0;
      for (int c = 0; c < 2; ++c)
        ab += double(lr.a[std::size_t(j) * 2 + c]) * lr.b[std::size_t(c) * n + o];
      num += (ab - e[std::size_t(j) * n + o]) * (ab - e[std::size_t(j) * n + o]);
      den += double(e[std::size_t(j) * n + o]) * e[std::size_t(j) * n + o];
    }
  CHECK(std::sqrt(num / den) < 1e-5);
  // on a real quantization error: ||W - Q - A B|| falls as the rank grows, to ~0 at full rank
  const auto w = normal(std::size_t(K) * n, 11, 0.1f);
  qbuf q(k::qformat::int4, K, n, 32, false);
  k::quantize_rtn(k::qformat::int4, w.data(), n, 1, K, n, 32, false, false, q.data.data(),
                  q.scales.data(), nullptr);
  std::vector<float> dq(w.size());
  k::dequantize(q.q, dq.data());
  double prev = 1e30;
  for (int r : {0, 4, 16, 40}) {
    const auto f = quant::lorc(w.data(), n, 1, q.q, r);
    double res = 0;
    for (int j = 0; j < K; ++j)
      for (int o = 0; o < n; ++o) {
        double ab = 0;
        for (int c = 0; c < f.rank; ++c)
          ab += double(f.a[std::size_t(j) * f.rank + c]) * f.b[std::size_t(c) * n + o];
        const double d = w[std::size_t(j) * n + o] - dq[std::size_t(j) * n + o] - ab;
        res += d * d;
      }
    MESSAGE("LoRC rank " << r << ": residual " << std::sqrt(res));
    CHECK(std::sqrt(res) < prev);
    prev = std::sqrt(res);
  }
  CHECK(prev < 1e-5);
}
