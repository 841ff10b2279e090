#pragma once
// The HTTP side of the OpenAI-compatible server without sockets: what a response looks like on
// the wire, which route a request goes to, who may call it, and the answers to requests that
// never reach a route. actors/gateway_session does the I/O (Beast parses requests; the bytes
// written are http_reply::wire), so everything here is testable with strings.
//
// Routes (method, path; a query string is ignored):
//   POST /v1/completions   POST /v1/chat/completions   POST /v1/update_weights_from_disk
//   GET  /v1/models        GET  /health                GET  /metrics
// route_request decides in this order: an unknown path is 404 not_found (before the key check:
// it reveals no more than the route list above), a missing or wrong key is 401 invalid_api_key,
// a wrong method is 405 with an Allow header. HEAD is served wherever GET is (the reply's head
// only: http_reply::wire's head_only). Error bodies are OpenAI error objects
// (runtime/api/openai.hpp).
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/api/openai.hpp"

namespace zf::openai {

// One response. wire() is what goes on the socket, the framing Beast wrote before this lived
// here (tests/actors/test_gateway_wire.cpp pins it):
//   "HTTP/1.1 <status> <reason>\r\n" "Server: zeroflow\r\n" <headers in order>
//   ["Connection: close\r\n" unless keep_alive]
//   ("Content-Length: <body size>" | "Transfer-Encoding: chunked") "\r\n\r\n" <body>
// A chunked reply is only the head: its body follows as http_chunk()s and last_chunk. So is a
// close-delimited one (for HTTP/1.0 clients, which know no chunking): "Connection: close" and
// neither length nor chunking; its body follows as raw bytes and closing the connection ends it.
struct http_reply {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // {"Content-Type", "text/plain"}
  std::string body;
  bool chunked = false;
  bool close_delimited = false;
  bool body_follows() const { return chunked || close_delimited; }  // in write()s after the head

  // head_only: the answer to a HEAD request: the same head (Content-Length of the body a GET
  // gets), no body, so a keep-alive client reads exactly what was sent.
  std::string wire(bool keep_alive, bool head_only = false) const;
};

// The end of a chunked body: the zero-length chunk.
inline constexpr std::string_view last_chunk = "0\r\n\r\n";

// The reason phrase of a status ("Not Found"), Beast's wording; "<unknown-status>" for codes
// outside the HTTP registry, as Beast writes them.
std::string_view reason_phrase(int status);

// Content-Type: application/json.
http_reply json_reply(int status, std::string body);
// e's status and JSON body, with Retry-After: <seconds> when retry_after_s > 0.
http_reply error_reply(const api_error& e, int retry_after_s = 0);

enum class http_route { completions, chat, models, health, metrics, update_weights };

// What the route decision needs of a parsed request (views into it).
struct http_request {
  std::string_view method;                        // "GET", "POST", ...
  std::string_view target;                        // path, maybe with "?query"
  std::optional<std::string_view> authorization;  // the Authorization header, if sent
};

struct routing {
  std::string label = "other";      // metrics label: the matched path, else "other"
  std::optional<http_route> route;  // set: run this route
  http_reply refusal;               // unset route: the answer (404, 401 or 405)
};

// api_keys empty: no key needed. Otherwise every /v1/ route needs `Authorization: Bearer <one of
// api_keys>` (as vLLM's --api-key); /health never does, /metrics only with protect_metrics.
routing route_request(const http_request& req, const std::vector<std::string>& api_keys,
                      bool protect_metrics = false);

// Whether `authorization` is "Bearer <k>" for a k in keys (true when keys is empty). The
// comparison does not stop at the first differing byte, so its time does not tell how much of a
// key was right.
bool bearer_authorized(std::optional<std::string_view> authorization,
                       const std::vector<std::string>& keys);

// Requests that never reach a route, and the listener's refusal:
http_reply body_too_large(std::size_t limit);           // 413: the body is over max_body_bytes
http_reply malformed_request(std::string_view reason);  // 400: Beast could not parse it
http_reply internal_error(std::string_view what);       // 500 server_error: a handler threw
// 503 server_error "too many connections" with Retry-After: 1: the answer to a request other
// than /health or /metrics on a connection over max_connections; _wire: its bytes (with
// Connection: close), which the listener writes to a connection over even those before closing.
http_reply too_many_connections();
std::string too_many_connections_wire();

}  // namespace zf::openai
