// The console's own server: an http_server whose sessions answer console_site's routes.
#include "actors/console_server.hpp"

#include <cstdlib>
#include <fstream>

#include "actors/console_http.hpp"
#include "actors/http_connection.hpp"
#include "actors/http_server.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;

std::optional<std::string_view> header(const http::request<http::string_body>& req, http::field f) {
  auto it = req.find(f);
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

std::optional<std::string_view> header(const http::request<http::string_body>& req,
                                       std::string_view name) {
  auto it = req.find(boost::beast::string_view(name.data(), name.size()));
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

struct console_state : detail::http_state {
  console_state(http_server_options h, std::shared_ptr<console_site> s)
      : http_state(std::move(h)), site(std::move(s)) {}
  std::shared_ptr<console_site> site;
};

class console_session final : public detail::connection {
 public:
  console_session(net::ip::tcp::socket s, std::shared_ptr<console_state> st, bool overflow)
      : connection(std::move(s), st, overflow), site_(st->site) {}

 private:
  void handle(const request& req) override {
    console_request r{{req.method_string().data(), req.method_string().size()},
                      {req.target().data(), req.target().size()},
                      header(req, http::field::authorization),
                      header(req, http::field::cookie),
                      header(req, "Last-Event-ID")};
    console_site::answer a;
    try {
      a = site_->handle(r);
    } catch (const std::exception& e) {  // a bug, not bad input: answered, never left hanging
      return send(openai::internal_error(e.what()));
    }
    label_ = a.label;
    if (a.stream)
      stream(a.reply, std::move(a.stream), console_site::stream_every);
    else
      send(a.reply);
  }
  std::shared_ptr<console_site> site_;
};

}  // namespace

struct console_server::impl {
  std::shared_ptr<console_state> state;
  std::unique_ptr<http_server> server;
};

console_server::console_server(const console_options& o) : impl_(std::make_unique<impl>()) {
  http_server_options h;
  h.host = o.host;
  h.port = o.port;
  h.io_threads = o.io_threads;
  h.max_connections = 256;
  h.max_body_bytes = 64 << 10;  // GET only: a body is never needed
  h.name = "console";
  auto st = std::make_shared<console_state>(h, make_console_site(o, ""));
  impl_->state = st;
  http_server::hooks hooks;
  hooks.on_bound = [o](bool loopback) {
    if (!loopback && o.token.empty())
      fail(
          "console: listening on {} (not loopback) needs a token: --token FILE or "
          "ZEROFLOW_CONSOLE_TOKEN",
          o.host);
  };
  impl_->server = std::make_unique<http_server>(
      st,
      [st](net::ip::tcp::socket socket, bool overflow) {
        std::make_shared<console_session>(std::move(socket), st, overflow)->start();
      },
      std::move(hooks));
}

console_server::~console_server() = default;

int console_server::port() const {
  return impl_->server->port();
}

void console_server::stop() {
  impl_->server->stop();
}

void console_server::wait() {
  impl_->server->wait();
}

std::string console_token(const std::string& file) {
  std::string token, where;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) fail("console: cannot read the token file {}", file);
    std::getline(in, token);
    where = "the token file " + file;
  } else if (const char* env = std::getenv("ZEROFLOW_CONSOLE_TOKEN")) {
    token = env;
    where = "ZEROFLOW_CONSOLE_TOKEN";
  } else {
    return "";
  }
  const auto b = token.find_first_not_of(" \t\r"), e = token.find_last_not_of(" \t\r");
  token = b == std::string::npos ? "" : token.substr(b, e - b + 1);
  if (token.size() < 16)
    fail("console: {} holds a token of {} characters: at least 16 are needed", where, token.size());
  for (char c : token)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '~' &&
        c != '-')
      fail("console: {} holds a character other than A-Z a-z 0-9 . _ ~ - in its token", where);
  return token;
}

}  // namespace zf::actors
