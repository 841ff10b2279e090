#pragma once
// Raw bytes of one HTTP connection through the gateway's request parser (Boost.Beast, which stays
// in actors/: this header has none of its types), without a socket: what the gateway's sessions
// read asynchronously, here in one call. The fuzz target fuzz/fuzz_http drives the parser and
// the routes through it, so it fuzzes exactly the parser configuration and the refusals the
// gateway uses (actors/http_connection).
#include <cstddef>
#include <functional>
#include <string_view>

#include "runtime/api/http_routes.hpp"

namespace zf::actors {

// One parsed request; every view is valid during the callback only.
struct parsed_request {
  openai::http_request head;  // method, target, Authorization
  std::string_view body;
  bool keep_alive = true, head_only = false;
};

// Parses bytes as the requests of one keep-alive connection, at most max_requests, each with a
// body of at most body_limit bytes (eager body, as the gateway). Each request goes to on_request,
// which returns the bytes it "wrote"; a request that fails to parse is answered as the gateway
// answers it (413 over the limit, 400 malformed; nothing for a stream that just ends) and ends the
// connection. Returns the bytes written in all.
std::size_t parse_connection_bytes(
    std::string_view bytes, std::size_t body_limit, int max_requests,
    const std::function<std::size_t(const parsed_request&)>& on_request);

}  // namespace zf::actors
