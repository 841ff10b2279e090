// HTTP framing, the route table and bearer-key checks of the OpenAI-compatible server; see
// http_routes.hpp for the shapes.
#include "runtime/http_routes.hpp"

#include <fmt/format.h>

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

}  // namespace

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "";
  }
}

std::string http_reply::wire(bool keep_alive) const {
  std::string out =
      fmt::format("HTTP/1.1 {} {}\r\nServer: zeroflow\r\n", status, reason_phrase(status));
  for (const auto& [name, value] : headers) out += fmt::format("{}: {}\r\n", name, value);
  if (!keep_alive) out += "Connection: close\r\n";
  if (chunked)
    out += "Transfer-Encoding: chunked\r\n\r\n";
  else
    out += fmt::format("Content-Length: {}\r\n\r\n{}", body.size(), body);
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
  for (const std::string& k : keys) {
    unsigned diff = static_cast<unsigned>(k.size() ^ given.size());
    for (std::size_t i = 0; i < k.size(); ++i)
      diff |= static_cast<unsigned char>(k[i]) ^
              static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    ok |= diff == 0;
  }
  return ok;
}

routing route_request(const http_request& req, const std::vector<std::string>& api_keys) {
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
  if (path != "/health" && !bearer_authorized(req.authorization, api_keys)) {
    out.refusal = error_reply(
        make_error(401, "Incorrect API key provided: send `Authorization: Bearer <key>`",
                   "invalid_request_error", "invalid_api_key"));
    return out;
  }
  if (req.method != r->method) {
    out.refusal = error_reply(make_error(
        405, fmt::format("Method {} not allowed on {} (use {})", req.method, path, r->method)));
    out.refusal.headers.emplace_back("Allow", std::string(r->method));
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

std::string too_many_connections_wire() {
  return error_reply(make_error(503, "too many connections", "server_error"), 1).wire(false);
}

}  // namespace zf::openai
