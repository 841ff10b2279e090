#pragma once
// The OpenAI-compatible server's own Prometheus metrics, appended to the backend's text on
// GET /metrics:
//   zeroflow_http_requests_total{route="/v1/completions",code="200"} N   counter, per response
//     sent (a stream counts once, when its head goes out); route "other" for unknown paths and
//     requests that never reached a route
//   zeroflow_http_open_connections N                                     gauge
// Thread-safe: every io thread of the gateway counts into one of these.
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace zf::openai {

class http_metrics {
 public:
  void count(std::string_view route, int status);
  void connection_opened() { ++open_; }
  void connection_closed() { --open_; }
  int open_connections() const { return open_.load(); }
  // backend_text (newline added if missing), then the two families above, rows sorted by
  // (route, code).
  std::string text(std::string backend_text) const;

 private:
  std::atomic<int> open_{0};
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
};

}  // namespace zf::openai
