#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/task_pool.hpp"

TEST_CASE("task_pool: every index runs exactly once, on a valid worker, job after job") {
  for (int threads : {1, 2, 4}) {
    zf::kernels::task_pool pool(threads);
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

TEST_CASE("task_pool: an exception in a task reaches the caller and the pool stays usable") {
  zf::kernels::task_pool pool(2);
  CHECK_THROWS_WITH(pool.run(20,
                             [](int, int i) {
                               if (i == 13) throw std::runtime_error("task 13 failed");
                             }),
                    "task 13 failed");
  std::atomic<int> sum{0};
  pool.run(10, [&](int, int i) { sum += i; });
  CHECK(sum == 45);
}

TEST_CASE("task_pool: helpers asleep between jobs wake for the next one and for the end") {
  // Each job after a pause longer than the helpers' spin (200 us): they have gone to sleep and
  // must be woken; every pool then ends with its helpers asleep (the destructor wakes them).
  for (int round = 0; round < 20; ++round) {
    zf::kernels::task_pool pool(1 + round % 3);
    for (int job = 0; job < 3; ++job) {
      std::this_thread::sleep_for(std::chrono::microseconds(400 + 300 * job));
      std::atomic<int> sum{0};
      pool.run(64, [&](int, int i) { sum += i; });
      CHECK(sum == 64 * 63 / 2);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

TEST_CASE("task_pool: try_run refuses while another thread's job holds the pool") {
  zf::kernels::task_pool pool(2);
  std::atomic<bool> inside{false}, release{false};
  std::thread owner([&] {
    pool.run(2, [&](int, int i) {
      if (i != 0) return;
      inside = true;
      while (!release) std::this_thread::yield();
    });
  });
  while (!inside) std::this_thread::yield();
  std::atomic<int> calls{0};
  CHECK_FALSE(pool.try_run(4, [&](int, int) { ++calls; }));
  CHECK(calls == 0);
  release = true;
  owner.join();
  CHECK(pool.try_run(4, [&](int, int) { ++calls; }));
  CHECK(calls == 4);
}
