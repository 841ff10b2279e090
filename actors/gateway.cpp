// The gateway: an http_server (listener, io threads, connections) whose sessions are the OpenAI
// server of gateway_session.cpp; the HTTP protocol is runtime/api/http_routes, openai_http and
// http_metrics.
//
// Event sinks can outlive everything here: the http_server's teardown stops the prepare pool
// after joining the io threads and closes the sink gate before destroying the io_context, whose
// pending handlers own the sessions: each session's destructor cancels its running request.
#include "actors/gateway.hpp"

#include <ctime>

#include "actors/console_http.hpp"
#include "actors/gateway_session.hpp"
#include "actors/http_server.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {

namespace net = boost::asio;

http_server_options http_options_of(const gateway_options& o) {
  http_server_options h;
  h.host = o.host;
  h.port = o.port;
  h.io_threads = o.io_threads;
  h.max_connections = o.max_connections;
  h.overflow_connections = o.overflow_connections;
  h.overflow_timeout_s = o.overflow_timeout_s;
  h.max_body_bytes = o.max_body_bytes;
  h.header_timeout_s = o.header_timeout_s;
  h.read_timeout_s = o.read_timeout_s;
  h.write_timeout_s = o.write_timeout_s;
  h.max_output_bytes = o.max_output_bytes;
  h.name = "gateway";
  return h;
}

struct gateway::impl {
  std::shared_ptr<detail::gateway_state> state;
  std::unique_ptr<http_server> server;
};

gateway::gateway(serve::completion_backend& backend, const gateway_options& o)
    : impl_(std::make_unique<impl>()) {
  auto st = std::make_shared<detail::gateway_state>(backend, o, http_options_of(o));
  st->created = static_cast<int64_t>(std::time(nullptr));
  st->prepare = std::make_unique<net::thread_pool>(std::max(1, o.prepare_threads));
  impl_->state = st;
  http_server::hooks h;
  h.on_bound = [st, o](bool loopback) {
    st->weight_updates = o.enable_weight_updates || loopback;
    if (o.console && !o.console->has_token() && !loopback)
      fail(
          "gateway: the console on {} (not loopback) needs a token: --console-token FILE or "
          "ZEROFLOW_CONSOLE_TOKEN",
          o.host);
  };
  // Requests still on the prepare pool finish (their continuations queue on the stopped
  // io_context, destroyed after this, which cancels what they submitted); queued ones are dropped.
  h.before_teardown = [st] {
    st->prepare->stop();
    st->prepare->join();
  };
  impl_->server = std::make_unique<http_server>(
      st,
      [st](net::ip::tcp::socket socket, bool overflow) {
        detail::start_session(std::move(socket), st, overflow);
      },
      std::move(h));
}

gateway::~gateway() = default;  // the http_server's destructor does the ordered teardown

int gateway::port() const {
  return impl_->server->port();
}

std::string gateway::metrics_text() const {
  return impl_->state->metrics.text(impl_->state->backend.metrics_text());
}

void gateway::stop() {
  impl_->server->stop();
}

void gateway::wait() {
  impl_->server->wait();
}

}  // namespace zf::actors
