// The batch-invariant GEMM: close to OpenBLAS (it computes the same product) and bit-identical
// for a row whatever the batch around it, the column range asked for, or the blocking.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "grad_check.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/matmul.hpp"
#include "kernels/matmul_invariant.hpp"

namespace {

using zf::test::randn;

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - b[i]));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}

}  // namespace

TEST_CASE("gemm_invariant: equals OpenBLAS to rounding, both orientations, beta 0 and 1") {
  for (auto [m, n, k] : {std::array{1, 1, 1}, std::array{5, 37, 19}, std::array{37, 300, 600},
                         std::array{8, 16, 8}, std::array{3, 1030, 257}}) {
    CAPTURE(m);
    CAPTURE(n);
    CAPTURE(k);
    auto a = randn(std::size_t(m) * k, 1), bn = randn(std::size_t(k) * n, 2),
         c0 = randn(std::size_t(m) * n, 3);
    for (bool tb : {false, true}) {
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> ours = c0, ref = c0;
        zf::kernels::gemm_invariant(tb, m, n, k, a.data(), 0, bn.data(), 0, beta, ours.data(), 0);
        // bn read as [n, k] when transposed: the same buffer, another matrix
        zf::kernels::gemm(false, tb, m, n, k, 1.0f, a.data(), 0, bn.data(), 0, beta, ref.data(), 0);
        CHECK(max_rel(ours, ref) < 1e-5);
      }
    }
  }
}

TEST_CASE("gemm_invariant: a row's result is the same bits in any batch and column range") {
  const int n = 203, k = 531;
  auto a = randn(std::size_t(40) * k, 4), b = randn(std::size_t(k) * n, 5),
       bt = randn(std::size_t(n) * k, 6);
  for (bool tb : {false, true}) {
    const float* bb = tb ? bt.data() : b.data();
    std::vector<float> all(std::size_t(40) * n);
    zf::kernels::gemm_invariant(tb, 40, n, k, a.data(), k, bb, 0, 0.0f, all.data(), n);
    for (int r : {0, 3, 4, 17, 39}) {  // alone, and inside tiles of every remainder
      std::vector<float> one(n);
      zf::kernels::gemm_invariant(tb, 1, n, k, a.data() + std::size_t(r) * k, k, bb, 0, 0.0f,
                                  one.data(), n);
      CHECK(std::equal(one.begin(), one.end(), all.begin() + std::size_t(r) * n));
      // columns 9..60 only (b offset by 9 columns / rows)
      std::vector<float> part(51);
      const float* bsub = tb ? bb + std::size_t(9) * k : bb + 9;
      zf::kernels::gemm_invariant(tb, 1, 51, k, a.data() + std::size_t(r) * k, k, bsub, tb ? k : n,
                                  0.0f, part.data(), 51);
      CHECK(std::equal(part.begin(), part.end(), all.begin() + std::size_t(r) * n + 9));
    }
    // rows 5..11 as a batch of 7
    std::vector<float> mid(std::size_t(7) * n);
    zf::kernels::gemm_invariant(tb, 7, n, k, a.data() + std::size_t(5) * k, k, bb, 0, 0.0f,
                                mid.data(), n);
    CHECK(std::equal(mid.begin(), mid.end(), all.begin() + std::size_t(5) * n));
  }
}

TEST_CASE("gemm_invariant: up to 8 rows stream b with the tiles' bits, wide n, beta 0 and 1") {
  // m <= 8 streams b's rows through c (matmul_invariant_cpu.cpp, stream_rows), m > 8 runs the
  // register tiles: the same FMA chain per element, so each row must match bit for bit, across
  // column passes (n > 1024) and with a k tail (k % 4 != 0).
  const int n = 2061, k = 131, m = 12;
  auto a = randn(std::size_t(m) * k, 10), b = randn(std::size_t(k) * n, 11),
       c0 = randn(std::size_t(m) * n, 12);
  for (float beta : {0.0f, 1.0f}) {
    std::vector<float> all = c0;
    zf::kernels::gemm_invariant(false, m, n, k, a.data(), k, b.data(), n, beta, all.data(), n);
    for (int rows = 1; rows <= 8; ++rows) {
      CAPTURE(rows);
      std::vector<float> few(c0.begin() + std::size_t(2) * n,
                             c0.begin() + std::size_t(2 + rows) * n);
      zf::kernels::gemm_invariant(false, rows, n, k, a.data() + std::size_t(2) * k, k, b.data(), n,
                                  beta, few.data(), n);
      CHECK(std::equal(few.begin(), few.end(), all.begin() + std::size_t(2) * n));
    }
  }
}

TEST_CASE("gemm_invariant: split over lent threads, the same bits as on one thread") {
  // kernels::gemm in batch-invariant mode spreads its output columns over a lent pool
  // (dispatch.hpp, kernel_pool); every element must still be computed as on one thread.
  zf::kernels::kernel_pool pool;
  pool.threads = 4;
  int calls = 0;
  pool.run = [&](int n, const std::function<void(int)>& fn) {
    ++calls;
    std::atomic<int> next{0};
    std::vector<std::thread> th;
    for (int t = 0; t < pool.threads; ++t)
      th.emplace_back([&] {
        for (int i = next++; i < n; i = next++) fn(i);
      });
    for (auto& t : th) t.join();
  };
  const zf::kernels::batch_invariant_scope inv(true);
  for (auto [m, n, k] : {std::array{33, 1000, 64}, std::array{7, 611, 300}, std::array{64, 97, 256},
                         std::array{2, 50257 / 8, 96}}) {
    CAPTURE(m);
    CAPTURE(n);
    CAPTURE(k);
    auto a = randn(std::size_t(m) * k, 7), b = randn(std::size_t(k) * n, 8),
         c0 = randn(std::size_t(m) * n, 9);
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> one = c0, split = c0;
        zf::kernels::gemm(false, tb, m, n, k, 1.0f, a.data(), k, b.data(), tb ? k : n, beta,
                          one.data(), n);
        const int before = calls;
        {
          const zf::kernels::kernel_pool_scope lend(&pool);
          zf::kernels::gemm(false, tb, m, n, k, 1.0f, a.data(), k, b.data(), tb ? k : n, beta,
                            split.data(), n);
        }
        CHECK(calls == before + 1);  // the pool was used (each shape is above the threshold)
        CHECK(std::equal(one.begin(), one.end(), split.begin()));
      }
  }
}

TEST_CASE("gemm: a few rows with threads lent take our split GEMM, equal to OpenBLAS to rounding") {
  // Decode steps (m <= 8) with a lent pool run the column-split kernel outside batch-invariant
  // mode too (it streams the weights faster than OpenBLAS's sgemm there): the same numbers as
  // OpenBLAS up to rounding, and exactly gemm_invariant's.
  zf::kernels::kernel_pool pool;
  pool.threads = 2;
  int calls = 0;
  pool.run = [&](int n, const std::function<void(int)>& fn) {
    ++calls;
    for (int i = 0; i < n; ++i) fn(i);
  };
  const int n = 3001, k = 384;  // m n k above the 1M multiply-adds that wake the pool
  for (int m : {1, 3, 8, 9}) {
    CAPTURE(m);
    auto a = randn(std::size_t(m) * k, 10), b = randn(std::size_t(k) * n, 11);
    for (bool tb : {false, true}) {
      std::vector<float> blas(std::size_t(m) * n), ours(blas.size()), inv(blas.size());
      zf::kernels::gemm(false, tb, m, n, k, 1.0f, a.data(), k, b.data(), tb ? k : n, 0.0f,
                        blas.data(), n);
      const int before = calls;
      {
        const zf::kernels::kernel_pool_scope lend(&pool);
        zf::kernels::gemm(false, tb, m, n, k, 1.0f, a.data(), k, b.data(), tb ? k : n, 0.0f,
                          ours.data(), n);
      }
      CHECK(calls == before + (m <= 8 ? 1 : 0));  // 9 rows: OpenBLAS, as without a pool
      zf::kernels::gemm_invariant(tb, m, n, k, a.data(), k, b.data(), 0, 0.0f, inv.data(), n);
      if (m <= 8) CHECK(std::equal(ours.begin(), ours.end(), inv.begin()));
      CHECK(max_rel(ours, blas) < 1e-5);
    }
  }
}
