#pragma once
// Jobs run one at a time, in the order posted, on a thread of the queue's own: what a caller
// hands off so that it does not wait (an engine process's weight pushes: a pool of engines then
// pushes to all of them at once, each in order). Destruction runs the jobs still queued, then
// joins. A job must not throw (it reports through its own callback).
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace zf {

class serial_queue {
 public:
  serial_queue();
  ~serial_queue();
  serial_queue(const serial_queue&) = delete;
  serial_queue& operator=(const serial_queue&) = delete;
  void post(std::function<void()> job);

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::thread th_;  // last: started once the rest exists
};

}  // namespace zf
