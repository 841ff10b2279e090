// The gateway's responses byte for byte on the wire: status line, header order, Connection: close,
// Content-Length or chunked framing. Pins what clients see while the response bytes are built in
// runtime/api/http_routes (before: Beast's serializer), so a change in the framing fails here.
// clang-format off
#include <utility>  // before Asio under C++20 (TOOLCHAIN.md section 5)
#include <boost/asio.hpp>
// clang-format on

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "actors/fake_backend.hpp"
#include "actors/gateway.hpp"

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

struct wire {
  zf::testing::fake_backend backend{256};
  std::optional<zf::actors::gateway> gw;
  net::io_context ioc;
  tcp::socket s{ioc};
  explicit wire(zf::actors::gateway_options o = {}) {
    o.port = 0;
    gw.emplace(backend, o);
    s.connect({net::ip::make_address("127.0.0.1"), uint16_t(gw->port())});
  }
  // Sends raw bytes and reads until `want` has been received (or the server closes).
  std::string exchange(const std::string& request, const std::string& want) {
    net::write(s, net::buffer(request));
    std::string got;
    char buf[4096];
    while (got.find(want) == std::string::npos) {
      boost::system::error_code ec;
      std::size_t n = s.read_some(net::buffer(buf), ec);
      if (ec) break;
      got.append(buf, n);
    }
    return got;
  }
};

std::string post(const std::string& target, const std::string& body,
                 const std::string& extra_headers = "") {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("gateway wire: a keep-alive JSON answer") {
  wire w;
  const std::string body = R"({"status":"ok"})";
  CHECK(w.exchange("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", body) ==
        "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: application/json\r\n"
        "Content-Length: 15\r\n\r\n" +
            body);
}

TEST_CASE("gateway wire: HEAD /health is the GET head without a body, and keep-alive goes on") {
  // Before: 405 with a JSON body, which a HEAD client does not read: the next response on the
  // connection then started inside that body.
  wire w;
  const std::string head =
      "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: application/json\r\n"
      "Content-Length: 15\r\n\r\n";
  CHECK(w.exchange("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n\r\n") == head);
  CHECK(w.exchange("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", R"({"status":"ok"})") ==
        head + R"({"status":"ok"})");
}

TEST_CASE("gateway wire: 405 carries Allow, Connection: close when the client asked") {
  wire w;
  const std::string got =
      w.exchange("GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "}}");
  const std::string body =
      R"j({"error":{"code":null,"message":"Method GET not allowed on /v1/completions (use POST)",)j"
      R"("param":null,"type":"invalid_request_error"}})";
  CHECK(got ==
        "HTTP/1.1 405 Method Not Allowed\r\nServer: zeroflow\r\n"
        "Content-Type: application/json\r\nAllow: POST\r\nConnection: close\r\n"
        "Content-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body);
}

TEST_CASE("gateway wire: 429 carries Retry-After") {
  wire w;
  w.backend.max_active = 0;
  w.backend.retry_after_s = 3;
  const std::string got =
      w.exchange(post("/v1/completions", R"({"prompt":"a","max_tokens":1})"), "}}");
  CHECK(
      got.starts_with("HTTP/1.1 429 Too Many Requests\r\nServer: zeroflow\r\n"
                      "Content-Type: application/json\r\nRetry-After: 3\r\nContent-Length: "));
  CHECK(got.ends_with(R"("param":null,"type":"rate_limit_exceeded"}})"));
  CHECK(got.find(R"({"error":{"code":429,"message":)") != std::string::npos);
}

TEST_CASE("gateway wire: a stream is chunked SSE ending with the zero chunk") {
  wire w;
  const std::string got = w.exchange(
      post("/v1/completions", R"({"prompt":"a b","max_tokens":2,"stream":true})"), "0\r\n\r\n");
  const std::string head =
      "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
  REQUIRE(got.starts_with(head));
  const std::string done = "data: [DONE]\n\n";
  CHECK(got.ends_with("e\r\n" + done + "\r\n0\r\n\r\n"));  // 0xe = 14 bytes of [DONE]
  CHECK(got.find("\r\ndata: {") != std::string::npos);
}

TEST_CASE("gateway wire: 413 closes after the answer") {
  zf::actors::gateway_options o;
  o.max_body_bytes = 8;
  wire w(o);
  const std::string got = w.exchange(post("/v1/completions", std::string(64, 'x')), "}}");
  CHECK(
      got.starts_with("HTTP/1.1 413 Payload Too Large\r\nServer: zeroflow\r\n"
                      "Content-Type: application/json\r\nConnection: close\r\nContent-Length: "));
  CHECK(got.ends_with(
      R"({"error":{"code":null,"message":"the request body exceeds the limit of 8 bytes",)"
      R"("param":null,"type":"invalid_request_error"}})"));
}
