// Prometheus text of the gateway's HTTP counters; see http_metrics.hpp.
#include "runtime/api/http_metrics.hpp"

#include <fmt/format.h>

namespace zf::openai {

void http_metrics::count(std::string_view route, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(route), status}];
}

void http_metrics::dropped(std::string_view reason) {
  std::lock_guard lock(mu_);
  auto it = dropped_.find(reason);
  if (it == dropped_.end()) it = dropped_.emplace(std::string(reason), 0).first;
  ++it->second;
}

uint64_t http_metrics::dropped_count(std::string_view reason) const {
  std::lock_guard lock(mu_);
  auto it = dropped_.find(reason);
  return it == dropped_.end() ? 0 : it->second;
}

std::string http_metrics::text(std::string backend_text) const {
  std::string out = std::move(backend_text);
  if (!out.empty() && out.back() != '\n') out += '\n';
  out +=
      "# HELP zeroflow_http_requests_total HTTP responses sent, by route and status code.\n"
      "# TYPE zeroflow_http_requests_total counter\n";
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, n] : requests_)
      out += fmt::format("zeroflow_http_requests_total{{route=\"{}\",code=\"{}\"}} {}\n", key.first,
                         key.second, n);
  }
  out += fmt::format(
      "# HELP zeroflow_http_open_connections HTTP connections currently open.\n"
      "# TYPE zeroflow_http_open_connections gauge\n"
      "zeroflow_http_open_connections {}\n"
      "# HELP zeroflow_http_overflow_connections Connections over the limit (health and metrics "
      "only).\n"
      "# TYPE zeroflow_http_overflow_connections gauge\n"
      "zeroflow_http_overflow_connections {}\n"
      "# HELP zeroflow_http_buffered_output_bytes Response bytes queued for clients.\n"
      "# TYPE zeroflow_http_buffered_output_bytes gauge\n"
      "zeroflow_http_buffered_output_bytes {}\n"
      "# HELP zeroflow_http_dropped_connections_total Connections closed on a client, by "
      "reason.\n"
      "# TYPE zeroflow_http_dropped_connections_total counter\n",
      open_.load(), overflow_.load(), buffered_.load());
  std::lock_guard lock(mu_);
  for (const char* reason : {"idle_timeout", "header_timeout", "read_timeout", "write_timeout",
                             "output_limit", "evicted", "over_capacity"}) {
    auto it = dropped_.find(std::string_view(reason));
    out += fmt::format("zeroflow_http_dropped_connections_total{{reason=\"{}\"}} {}\n", reason,
                       it == dropped_.end() ? 0 : it->second);
  }
  return out;
}

}  // namespace zf::openai
