// runtime/api/http_routes and runtime/api/http_metrics: the gateway's route table, bearer-key
// checks, error replies and response bytes, without sockets.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "runtime/api/http_metrics.hpp"
#include "runtime/api/http_routes.hpp"
#include "runtime/api/url_parts.hpp"

using nlohmann::json;
using zf::openai::http_reply;
using zf::openai::http_request;
using zf::openai::http_route;
using zf::openai::route_request;

namespace {

const std::vector<std::string> no_keys;
const std::vector<std::string> keys = {"sk-one", "sk-two"};

std::string header(const http_reply& r, const std::string& name) {
  for (const auto& [n, v] : r.headers)
    if (n == name) return v;
  return "<none>";
}

json error_of(const http_reply& r) {
  return json::parse(r.body)["error"];
}

}  // namespace

TEST_CASE("http_routes: each path and method goes to its route") {
  const std::pair<http_request, http_route> cases[] = {
      {{"POST", "/v1/completions", {}}, http_route::completions},
      {{"POST", "/v1/chat/completions", {}}, http_route::chat},
      {{"GET", "/v1/models", {}}, http_route::models},
      {{"GET", "/health", {}}, http_route::health},
      {{"GET", "/metrics?x=1", {}}, http_route::metrics},  // the query is ignored
      {{"POST", "/v1/update_weights_from_disk", {}}, http_route::update_weights},
  };
  for (const auto& [req, want] : cases) {
    CAPTURE(req.target);
    auto r = route_request(req, no_keys);
    REQUIRE(r.route);
    CHECK(*r.route == want);
    CHECK(r.label == req.target.substr(0, req.target.find('?')));
  }
}

TEST_CASE("http_routes: unknown path is 404 not_found, before any key check") {
  auto r = route_request({"GET", "/v2/nope?q=1", {}}, keys);
  CHECK_FALSE(r.route);
  CHECK(r.label == "other");
  CHECK(r.refusal.status == 404);
  CHECK(header(r.refusal, "Content-Type") == "application/json");
  CHECK(error_of(r.refusal) == json{{"message", "Not found: GET /v2/nope"},
                                    {"type", "invalid_request_error"},
                                    {"param", nullptr},
                                    {"code", "not_found"}});
}

TEST_CASE("http_routes: wrong method is 405 with Allow") {
  auto r = route_request({"GET", "/v1/chat/completions", {}}, no_keys);
  CHECK_FALSE(r.route);
  CHECK(r.label == "/v1/chat/completions");
  CHECK(r.refusal.status == 405);
  CHECK(header(r.refusal, "Allow") == "POST");
  CHECK(error_of(r.refusal)["message"] ==
        "Method GET not allowed on /v1/chat/completions (use POST)");
  CHECK(header(route_request({"DELETE", "/health", {}}, no_keys).refusal, "Allow") == "GET, HEAD");
  // HEAD is served wherever GET is, and its reply has the head only
  for (const char* path : {"/health", "/metrics", "/v1/models"})
    CHECK(route_request({"HEAD", path, {}}, no_keys).route);
  CHECK(route_request({"HEAD", "/v1/completions", {}}, no_keys).refusal.status == 405);
  const http_reply ok = zf::openai::json_reply(200, R"({"status":"ok"})");
  CHECK(ok.wire(true, true) ==
        "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: application/json\r\n"
        "Content-Length: 15\r\n\r\n");
}

TEST_CASE("http_routes: api keys refuse with 401 and accept a listed bearer token") {
  const json unauthorized = {
      {"message", "Incorrect API key provided: send `Authorization: Bearer <key>`"},
      {"type", "invalid_request_error"},
      {"param", nullptr},
      {"code", "invalid_api_key"}};
  for (const char* bad : {"", "sk-one", "Bearer sk-on", "Bearer sk-one2", "Basic sk-one",
                          "bearer sk-one", "Bearer  sk-one", "Bearer "}) {
    CAPTURE(bad);
    std::optional<std::string_view> auth;
    if (*bad) auth = bad;
    auto r = route_request({"POST", "/v1/completions", auth}, keys);
    CHECK_FALSE(r.route);
    CHECK(r.label == "/v1/completions");  // counted under the route
    CHECK(r.refusal.status == 401);
    CHECK(error_of(r.refusal) == unauthorized);
  }
  CHECK(route_request({"POST", "/v1/completions", "Bearer sk-one"}, keys).route);
  // /health never needs a key, /metrics only when protected (vLLM's defaults)
  CHECK(route_request({"GET", "/health", {}}, keys).route);
  CHECK(route_request({"GET", "/metrics", {}}, keys).route);
  CHECK(route_request({"GET", "/metrics", {}}, keys, true).refusal.status == 401);
  CHECK(route_request({"GET", "/metrics", "Bearer sk-two"}, keys, true).route);
  CHECK(route_request({"GET", "/v1/models", "Bearer sk-two"}, keys).route);
  CHECK(route_request({"GET", "/health", {}}, keys).route);  // /health needs no key
  // The key is checked before the method: a stranger learns nothing about the methods.
  CHECK(route_request({"GET", "/v1/completions", {}}, keys).refusal.status == 401);
  CHECK(route_request({"GET", "/v1/completions", "Bearer sk-one"}, keys).refusal.status == 405);
}

TEST_CASE("http_routes: bearer_authorized") {
  CHECK(zf::openai::bearer_authorized(std::nullopt, no_keys));
  CHECK(zf::openai::bearer_authorized("anything", no_keys));
  CHECK_FALSE(zf::openai::bearer_authorized(std::nullopt, keys));
  CHECK(zf::openai::bearer_authorized("Bearer sk-two", keys));
  CHECK_FALSE(zf::openai::bearer_authorized("Bearer sk-tw", keys));
  CHECK_FALSE(zf::openai::bearer_authorized("Bearer sk-twoo", keys));
  CHECK_FALSE(zf::openai::bearer_authorized(std::string_view("Bearer sk-one\0", 14), keys));
}

TEST_CASE("http_routes: reply bytes on the wire") {
  const http_reply r = zf::openai::json_reply(200, R"({"a":1})");
  CHECK(r.wire(true) ==
        "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: application/json\r\n"
        "Content-Length: 7\r\n\r\n{\"a\":1}");
  CHECK(r.wire(false) ==
        "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: application/json\r\n"
        "Connection: close\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
  const http_reply head{200, {{"Content-Type", "text/event-stream"}}, {}, true};
  CHECK(head.wire(true) ==
        "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n");
  CHECK(http_reply{204, {}, {}}.wire(true) ==
        "HTTP/1.1 204 No Content\r\nServer: zeroflow\r\nContent-Length: 0\r\n\r\n");
  // Beast's reason phrases, for every status this server itself sends.
  const std::pair<int, std::string_view> reasons[] = {{200, "OK"},
                                                      {400, "Bad Request"},
                                                      {401, "Unauthorized"},
                                                      {403, "Forbidden"},
                                                      {404, "Not Found"},
                                                      {405, "Method Not Allowed"},
                                                      {413, "Payload Too Large"},
                                                      {429, "Too Many Requests"},
                                                      {500, "Internal Server Error"},
                                                      {503, "Service Unavailable"}};
  for (const auto& [status, reason] : reasons) CHECK(zf::openai::reason_phrase(status) == reason);
  CHECK(zf::openai::reason_phrase(501) == "Not Implemented");  // a backend's status passed through
  CHECK(zf::openai::reason_phrase(299) == "<unknown-status>");
  CHECK(zf::openai::http_chunk("data: x\n\n") == "9\r\ndata: x\n\n\r\n");
  CHECK(zf::openai::http_chunk(std::string(26, 'y')) == "1a\r\n" + std::string(26, 'y') + "\r\n");
  CHECK(zf::openai::http_chunk("").empty());  // an empty chunk would end the body
  CHECK(zf::openai::last_chunk == "0\r\n\r\n");
}

TEST_CASE("http_routes: error replies") {
  auto e =
      zf::openai::error_reply(zf::openai::make_error(429, "busy", "rate_limit_exceeded", 429), 3);
  CHECK(e.status == 429);
  CHECK(e.headers == std::vector<std::pair<std::string, std::string>>{
                         {"Content-Type", "application/json"}, {"Retry-After", "3"}});
  CHECK(header(zf::openai::error_reply(zf::openai::make_error(400, "x")), "Retry-After") ==
        "<none>");

  auto big = zf::openai::body_too_large(1024);
  CHECK(big.status == 413);
  CHECK(error_of(big)["message"] == "the request body exceeds the limit of 1024 bytes");
  auto bad = zf::openai::malformed_request("bad method");
  CHECK(bad.status == 400);
  CHECK(error_of(bad)["message"] == "malformed HTTP request: bad method");
  auto boom = zf::openai::internal_error("encode failed");
  CHECK(boom.status == 500);
  CHECK(error_of(boom)["type"] == "server_error");
  CHECK(error_of(boom)["message"] == "internal error: encode failed");

  const std::string body = R"({"error":{"code":null,"message":"too many connections","param":null,)"
                           R"("type":"server_error"}})";
  CHECK(zf::openai::too_many_connections_wire() ==
        "HTTP/1.1 503 Service Unavailable\r\nServer: zeroflow\r\nContent-Type: application/json"
        "\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body);
}

TEST_CASE("http_metrics: counters by route and code, open connections, after the backend's") {
  zf::openai::http_metrics m;
  m.count("/v1/completions", 200);
  m.count("/v1/completions", 200);
  m.count("other", 404);
  m.count("/v1/completions", 429);
  m.connection_opened();
  m.connection_opened();
  m.connection_closed();
  m.connection_opened(true);
  m.buffered(300);
  m.buffered(-100);
  m.dropped("write_timeout");
  m.dropped("write_timeout");
  m.dropped("idle_timeout");
  CHECK(m.open_connections() == 1);
  CHECK(m.overflow_connections() == 1);
  CHECK(m.dropped_count("write_timeout") == 2);
  CHECK(m.text("zeroflow_up 1") ==
        "zeroflow_up 1\n"
        "# HELP zeroflow_http_requests_total HTTP responses sent, by route and status code.\n"
        "# TYPE zeroflow_http_requests_total counter\n"
        "zeroflow_http_requests_total{route=\"/v1/completions\",code=\"200\"} 2\n"
        "zeroflow_http_requests_total{route=\"/v1/completions\",code=\"429\"} 1\n"
        "zeroflow_http_requests_total{route=\"other\",code=\"404\"} 1\n"
        "# HELP zeroflow_http_open_connections HTTP connections currently open.\n"
        "# TYPE zeroflow_http_open_connections gauge\n"
        "zeroflow_http_open_connections 1\n"
        "# HELP zeroflow_http_overflow_connections Connections over the limit (health and "
        "metrics only).\n"
        "# TYPE zeroflow_http_overflow_connections gauge\n"
        "zeroflow_http_overflow_connections 1\n"
        "# HELP zeroflow_http_buffered_output_bytes Response bytes queued for clients.\n"
        "# TYPE zeroflow_http_buffered_output_bytes gauge\n"
        "zeroflow_http_buffered_output_bytes 200\n"
        "# HELP zeroflow_http_dropped_connections_total Connections closed on a client, by "
        "reason.\n"
        "# TYPE zeroflow_http_dropped_connections_total counter\n"
        "zeroflow_http_dropped_connections_total{reason=\"idle_timeout\"} 1\n"
        "zeroflow_http_dropped_connections_total{reason=\"header_timeout\"} 0\n"
        "zeroflow_http_dropped_connections_total{reason=\"read_timeout\"} 0\n"
        "zeroflow_http_dropped_connections_total{reason=\"write_timeout\"} 2\n"
        "zeroflow_http_dropped_connections_total{reason=\"output_limit\"} 0\n"
        "zeroflow_http_dropped_connections_total{reason=\"evicted\"} 0\n"
        "zeroflow_http_dropped_connections_total{reason=\"over_capacity\"} 0\n");
  CHECK(zf::openai::http_metrics().text("").starts_with("# HELP zeroflow_http_requests_total"));
}

TEST_CASE("url parts: escapes, one query parameter, one cookie, secrets compared whole") {
  using namespace zf::openai;
  CHECK(percent_decode("a%2Fb%2e%2E+c") == std::optional<std::string>("a/b..+c"));
  for (const char* bad : {"%", "%2", "%zz", "a%g1"}) CHECK_MESSAGE(!percent_decode(bad), bad);
  CHECK(query_value("width=800&token=abc", "token") == std::optional<std::string_view>("abc"));
  CHECK(query_value("flag&x=1", "flag") == std::optional<std::string_view>(""));
  CHECK(!query_value("tokens=1", "token"));
  CHECK(cookie_value("a=1;  zf=x; b=2", "zf") == std::optional<std::string_view>("x"));
  CHECK(!cookie_value("zfx=1", "zf"));
  CHECK(secret_equal("secret-token", "secret-token"));
  CHECK(!secret_equal("secret-token", "secret-tokeN"));
  CHECK(!secret_equal("secret-token", "secret-token-longer"));
  CHECK(!secret_equal("secret", ""));
  CHECK(secret_equal("", ""));
}
