#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "runtime/core/worker_pool.hpp"

TEST_CASE("worker_pool: every index runs exactly once, on a valid worker, job after job") {
  for (int threads : {1, 2, 4}) {
    zf::worker_pool pool(threads);
    CHECK(pool.size() == threads);
    for (int job = 0; job < 50; ++job) {
      const int n = job % 7 == 0 ? 0 : 1 + job * 3;
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      std::atomic<int> bad_worker{0};
      pool.run(n, [&](int w, int i) {
        if (w < 0 || w >= threads) ++bad_worker;
        ++hits[static_cast<std::size_t>(i)];
      });
      for (auto& h : hits) CHECK(h.load() == 1);
      CHECK(bad_worker == 0);
    }
  }
}

TEST_CASE("worker_pool: an exception in a task reaches the caller and the pool stays usable") {
  zf::worker_pool pool(2);
  CHECK_THROWS_WITH(pool.run(20,
                             [](int, int i) {
                               if (i == 13) throw std::runtime_error("task 13 failed");
                             }),
                    "task 13 failed");
  std::atomic<int> sum{0};
  pool.run(10, [&](int, int i) { sum += i; });
  CHECK(sum == 45);
}
