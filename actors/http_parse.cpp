#include "actors/http_parse.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <utility>  // before Asio (TOOLCHAIN.md section 5)

#include "runtime/api/openai_http.hpp"

namespace zf::actors {
namespace {

namespace http = boost::beast::http;

std::string_view view(boost::beast::string_view s) {
  return {s.data(), s.size()};
}

}  // namespace

std::size_t parse_connection_bytes(
    std::string_view bytes, std::size_t body_limit, int max_requests,
    const std::function<std::size_t(const parsed_request&)>& on_request) {
  boost::asio::const_buffer in(bytes.data(), bytes.size());
  std::size_t written = 0;
  for (int n = 0; n < max_requests; ++n) {  // requests on one connection
    http::request_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    parser.eager(true);
    boost::beast::error_code ec;
    while (!parser.is_done()) {
      if (in.size() == 0) {
        if (!parser.got_some()) return written;  // closed between requests
        parser.put_eof(ec);                      // the client closed its side
        if (!ec && !parser.is_done()) ec = http::error::partial_message;
        break;
      }
      const std::size_t used = parser.put(in, ec);
      in += used;
      if (ec == http::error::need_more) {
        if (used == 0 && in.size() > 0) {
          // Beast wants more than what is left in one piece: nothing more is coming.
          ec = http::error::partial_message;
          break;
        }
        ec = {};
        continue;
      }
      if (ec) break;
    }
    if (ec == http::error::body_limit)
      return written + openai::body_too_large(body_limit).wire(false).size();
    if (ec) {
      if (ec != http::error::partial_message && ec != http::error::end_of_stream)
        written += openai::malformed_request(ec.message()).wire(false).size();
      return written;
    }
    const auto& req = parser.get();
    const auto auth = req.find(http::field::authorization);
    parsed_request p;
    p.head = {view(req.method_string()), view(req.target()),
              auth == req.end() ? std::nullopt : std::optional(view(auth->value()))};
    p.body = req.body();
    p.keep_alive = req.keep_alive();
    p.head_only = req.method() == http::verb::head;
    written += on_request(p);
    if (!p.keep_alive) break;
  }
  return written;
}

}  // namespace zf::actors
