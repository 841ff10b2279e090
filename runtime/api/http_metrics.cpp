// Prometheus text of the gateway's HTTP counters; see http_metrics.hpp.
#include "runtime/api/http_metrics.hpp"

#include <fmt/format.h>

namespace zf::openai {

void http_metrics::count(std::string_view route, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(route), status}];
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
      "zeroflow_http_open_connections {}\n",
      open_.load());
  return out;
}

}  // namespace zf::openai
