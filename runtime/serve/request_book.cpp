#include "runtime/serve/request_book.hpp"

#include <algorithm>

namespace zf::serve {

bool request_book::open(uint64_t id, int choices, event_sink sink, std::string& gone) {
  std::lock_guard lk(mu_);
  if (!gone_.empty()) {
    gone = gone_;
    return false;
  }
  open_[id] = {std::move(sink), std::vector<bool>(std::size_t(std::max(1, choices)))};
  return true;
}

bool request_book::forget(uint64_t id) {
  std::lock_guard lk(mu_);
  return open_.erase(id) > 0;
}

void request_book::deliver(uint64_t id, completion_event e) {
  std::lock_guard lk(mu_);
  auto it = open_.find(id);
  if (it == open_.end() || e.index < 0 || e.index >= int(it->second.ended.size())) return;
  const event_sink sink = it->second.sink;
  if (e.finish != finish_reason::none) {
    auto& ended = it->second.ended;
    ended[std::size_t(e.index)] = true;
    if (std::find(ended.begin(), ended.end(), false) == ended.end()) open_.erase(it);
  }
  e.request_id = id;
  sink(e);
}

void request_book::fail_all(const std::string& why) {
  std::lock_guard lk(mu_);
  if (gone_.empty()) gone_ = why;
  for (auto& [id, r] : open_)
    for (std::size_t i = 0; i < r.ended.size(); ++i) {
      if (r.ended[i]) continue;
      completion_event e;
      e.request_id = id;
      e.index = static_cast<int>(i);
      e.finish = finish_reason::error;
      e.error = gone_;
      r.sink(e);
    }
  open_.clear();
}

std::string request_book::gone() const {
  std::lock_guard lk(mu_);
  return gone_;
}

}  // namespace zf::serve
