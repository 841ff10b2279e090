// HTTP framing, the route table and bearer-key checks of the OpenAI-compatible server; see
// http_routes.hpp for the shapes.
#include "runtime/api/http_routes.hpp"

#include <fmt/format.h>

#include "runtime/api/url_parts.hpp"

namespace zf::openai {

namespace {

struct route_entry {
  std::string_view path;
  std::string_view method;
  http_route route;
};

constexpr route_entry routes[] = {
    {"/v1/completions", "POST", http_route::completions},
    {"/v1/chat/completions", "POST", http_route::chat},
    {"/v1/models", "GET", http_route::models},
    {"/health", "GET", http_route::health},
    {"/metrics", "GET", http_route::metrics},
    {"/v1/update_weights_from_disk", "POST", http_route::update_weights},
};

// Beast's reason phrases (boost/beast/http/impl/status.ipp, obsolete_reason), so that a status
// passed through from the backend (a weight update's 501, say) reads as it did.
constexpr std::pair<int, std::string_view> reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Payload Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Entity"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {444, "Connection Closed Without Response"},
    {451, "Unavailable For Legal Reasons"},
    {499, "Client Closed Request"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {510, "Not Extended"},
    {511, "Network Authentication Required"},
    {599, "Network Connect Timeout Error"},
};

}  // namespace

std::string_view reason_phrase(int status) {
  for (const auto& [code, reason] : reasons)
    if (code == status) return reason;
  return "<unknown-status>";
}

std::string http_reply::wire(bool keep_alive, bool head_only) const {
  std::string out =
      fmt::format("HTTP/1.1 {} {}\r\nServer: zeroflow\r\n", status, reason_phrase(status));
  for (const auto& [name, value] : headers) out += fmt::format("{}: {}\r\n", name, value);
  if (!keep_alive || close_delimited) out += "Connection: close\r\n";
  if (close_delimited)
    out += "\r\n";
  else if (chunked)
    out += "Transfer-Encoding: chunked\r\n\r\n";
  else
    out += fmt::format("Content-Length: {}\r\n\r\n{}", body.size(),
                       head_only ? std::string_view() : std::string_view(body));
  return out;
}

http_reply json_reply(int status, std::string body) {
  return {status, {{"Content-Type", "application/json"}}, std::move(body)};
}

http_reply error_reply(const api_error& e, int retry_after_s) {
  http_reply r = json_reply(e.status, e.body());
  if (retry_after_s > 0) r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
  return r;
}

bool bearer_authorized(std::optional<std::string_view> authorization,
                       const std::vector<std::string>& keys) {
  if (keys.empty()) return true;
  if (!authorization || !authorization->starts_with("Bearer ")) return false;
  const std::string_view given = authorization->substr(7);
  bool ok = false;
  for (const std::string& k : keys) ok |= secret_equal(k, given);  // every key, no early exit
  return ok;
}

routing route_request(const http_request& req, const std::vector<std::string>& api_keys,
                      bool protect_metrics) {
  const std::string_view path = req.target.substr(0, req.target.find('?'));
  routing out;
  const route_entry* r = nullptr;
  for (const route_entry& x : routes)
    if (x.path == path) r = &x;
  if (!r) {
    out.refusal = error_reply(make_error(404, fmt::format("Not found: {} {}", req.method, path),
                                         "invalid_request_error", "not_found"));
    return out;
  }
  out.label = std::string(r->path);
  const bool needs_key = path.starts_with("/v1/") || (path == "/metrics" && protect_metrics);
  if (needs_key && !bearer_authorized(req.authorization, api_keys)) {
    out.refusal = error_reply(
        make_error(401, "Incorrect API key provided: send `Authorization: Bearer <key>`",
                   "invalid_request_error", "invalid_api_key"));
    return out;
  }
  const bool get = r->method == std::string_view("GET");
  if (req.method != r->method && !(get && req.method == "HEAD")) {
    const std::string allow = get ? "GET, HEAD" : std::string(r->method);
    out.refusal = error_reply(make_error(
        405, fmt::format("Method {} not allowed on {} (use {})", req.method, path, allow)));
    out.refusal.headers.emplace_back("Allow", allow);
    return out;
  }
  out.route = r->route;
  return out;
}

http_reply body_too_large(std::size_t limit) {
  return error_reply(
      make_error(413, fmt::format("the request body exceeds the limit of {} bytes", limit)));
}

http_reply malformed_request(std::string_view reason) {
  return error_reply(make_error(400, fmt::format("malformed HTTP request: {}", reason)));
}

http_reply internal_error(std::string_view what) {
  return error_reply(make_error(500, fmt::format("internal error: {}", what), "server_error"));
}

http_reply too_many_connections() {
  return error_reply(make_error(503, "too many connections", "server_error"), 1);
}

std::string too_many_connections_wire() {
  return too_many_connections().wire(false);
}

}  // namespace zf::openai
