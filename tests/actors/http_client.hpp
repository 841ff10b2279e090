#pragma once
// A small blocking Beast client for the gateway tests (test_gateway, test_weight_update).
// clang-format off
#include <utility>  // before Asio under C++20 (TOOLCHAIN.md section 5)
#include <boost/asio.hpp>
// clang-format on

#include <doctest/doctest.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace zf::testing {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using nlohmann::json;

using response = http::response<http::string_body>;

// One keep-alive connection; request() writes one request and reads its whole answer.
struct client {
  net::io_context ioc;
  tcp::socket socket{ioc};
  beast::flat_buffer buffer;

  explicit client(int port) {
    socket.connect({net::ip::make_address("127.0.0.1"), uint16_t(port)});
  }

  static http::request<http::string_body> make(http::verb verb, std::string target,
                                               std::string body = {}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    return req;
  }
  response request(http::verb verb, std::string target, std::string body = {}) {
    http::write(socket, make(verb, std::move(target), std::move(body)));
    return read();
  }
  response read() {
    response res;
    http::read(socket, buffer, res);
    return res;
  }
  response post(std::string target, const json& body) {
    return request(http::verb::post, std::move(target), body.dump());
  }
  response get(std::string target) { return request(http::verb::get, std::move(target)); }
};

// SSE body -> its JSON events; "[DONE]" becomes the string "[DONE]".
inline std::vector<json> sse_events(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  for (size_t end; (end = body.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    std::string line = body.substr(pos, end - pos);
    REQUIRE(line.rfind("data: ", 0) == 0);
    out.push_back(line == "data: [DONE]" ? json("[DONE]") : json::parse(line.substr(6)));
  }
  CHECK(pos == body.size());
  return out;
}

}  // namespace zf::testing
