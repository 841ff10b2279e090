#pragma once
// The OpenAI-compatible server's own Prometheus metrics, appended to the backend's text on
// GET /metrics:
//   zeroflow_http_requests_total{route="/v1/completions",code="200"} N   counter, per response
//     sent (a stream counts once, when its head goes out); route "other" for unknown paths and
//     requests that never reached a route
//   zeroflow_http_open_connections N                                     gauge
//   zeroflow_http_overflow_connections N                                 gauge: connections over
//     the limit, answered /health and /metrics only
//   zeroflow_http_buffered_output_bytes N                                gauge: response bytes
//     queued for clients and not yet taken by their sockets
//   zeroflow_http_dropped_connections_total{reason="..."} N              counter, per connection
//     the server closed on a client: idle_timeout (no request within header_timeout_s of the
//     connection opening or the last response), header_timeout (slow headers), read_timeout (slow
//     body), write_timeout (a client not reading), output_limit (a stream's queued bytes over
//     the per-connection bound), evicted (idle, closed to make room for a new connection when
//     every slot was taken), over_capacity (refused: every slot full of busy connections)
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
  // overflow: a connection over max_connections (health and metrics only), counted apart.
  void connection_opened(bool overflow = false) { ++(overflow ? overflow_ : open_); }
  void connection_closed(bool overflow = false) { --(overflow ? overflow_ : open_); }
  int open_connections() const { return open_.load(); }
  int overflow_connections() const { return overflow_.load(); }
  void buffered(int64_t delta) { buffered_ += delta; }
  int64_t buffered_bytes() const { return buffered_.load(); }
  // reason: one of the labels above.
  void dropped(std::string_view reason);
  uint64_t dropped_count(std::string_view reason) const;
  // backend_text (newline added if missing), then the two families above, rows sorted by
  // (route, code).
  std::string text(std::string backend_text) const;

 private:
  std::atomic<int> open_{0}, overflow_{0};
  std::atomic<int64_t> buffered_{0};
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  std::map<std::string, uint64_t, std::less<>> dropped_;      // reason -> count
};

}  // namespace zf::openai
