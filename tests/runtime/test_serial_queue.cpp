// serial_queue (runtime/core): jobs run one at a time, in the order posted, off the poster's
// thread; destruction runs what is still queued before it returns.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "runtime/core/serial_queue.hpp"

TEST_CASE("serial queue: in order, on its own thread, drained at destruction") {
  std::vector<int> order;
  std::thread::id ran_on;
  {
    zf::serial_queue q;
    q.post([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the rest queue behind it
      ran_on = std::this_thread::get_id();
      order.push_back(0);
    });
    for (int i = 1; i < 100; ++i) q.post([&, i] { order.push_back(i); });
  }  // returns once all 100 ran
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(order[std::size_t(i)] == i);
  CHECK(ran_on != std::this_thread::get_id());
}
