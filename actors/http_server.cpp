// The listener and io threads of an HTTP server; see http_server.hpp.
#include "actors/http_server.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <thread>
#include <vector>

#include "actors/http_connection.hpp"
#include "runtime/api/http_routes.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct http_server::impl {
  std::shared_ptr<detail::http_state> state;
  detail::session_factory start;
  hooks h;
  std::unique_ptr<net::io_context> ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<net::steady_timer> retry;
  std::vector<std::thread> threads;
  int port = 0;
  bool loopback = false;

  std::mutex mu;
  std::condition_variable cv;
  bool stopped = false;

  void accept() {
    acceptor->async_accept(
        net::make_strand(*ioc), [this](boost::system::error_code ec, tcp::socket socket) {
          if (ec == net::error::operation_aborted) return;
          if (ec) {  // e.g. out of file descriptors: retry shortly instead of spinning
            spdlog::warn("{}: accept failed: {}", state->limits.name, ec.message());
            retry->expires_after(std::chrono::milliseconds(50));
            retry->async_wait([this](boost::system::error_code ec) {
              if (!ec) accept();
            });
            return;
          }
          const auto& o = state->limits;
          if (state->metrics.open_connections() < o.max_connections ||
              detail::connection::evict_oldest_idle(*state))
            start(std::move(socket), false);
          else if (state->metrics.overflow_connections() < o.overflow_connections)
            start(std::move(socket), true);  // /health, /metrics only
          else
            refuse(std::move(socket));
          accept();
        });
  }

  // Over max_connections and the overflow slots: a short 503 written at once (it fits the socket
  // buffer), then close.
  void refuse(tcp::socket socket) {
    state->metrics.count("other", 503);
    state->metrics.dropped("over_capacity");
    static const std::string msg = openai::too_many_connections_wire();
    boost::system::error_code ignored;
    net::write(socket, net::buffer(msg), ignored);
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }
};

http_server::http_server(std::shared_ptr<detail::http_state> state, detail::session_factory start,
                         hooks h)
    : impl_(std::make_unique<impl>()) {
  impl& m = *impl_;
  m.state = std::move(state);
  m.start = std::move(start);
  m.h = std::move(h);
  const auto& o = m.state->limits;
  const int threads = std::max(1, o.io_threads);
  m.ioc = std::make_unique<net::io_context>(threads);
  m.work.emplace(m.ioc->get_executor());
  m.acceptor = std::make_unique<tcp::acceptor>(net::make_strand(*m.ioc));
  m.retry = std::make_unique<net::steady_timer>(m.acceptor->get_executor());

  boost::system::error_code ec;
  auto cannot = [&](const boost::system::error_code& ec) {
    fail("{}: cannot listen on {}:{}: {}", o.name, o.host, o.port, ec.message());
  };
  tcp::resolver resolver(*m.ioc);
  auto endpoints = resolver.resolve(o.host, std::to_string(o.port), ec);
  if (ec) cannot(ec);
  if (endpoints.empty()) cannot(net::error::host_not_found);
  tcp::endpoint ep = endpoints.begin()->endpoint();
  m.acceptor->open(ep.protocol(), ec);
  if (!ec) m.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor->bind(ep, ec);
  if (!ec) m.acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) cannot(ec);
  m.port = m.acceptor->local_endpoint().port();
  m.loopback = ep.address().is_loopback();
  if (m.h.on_bound) m.h.on_bound(m.loopback);
  {
    std::lock_guard lock(m.state->sink_mu);
    m.state->ioc = m.ioc.get();
  }
  m.accept();
  for (int i = 0; i < threads; ++i)
    m.threads.emplace_back([&m] {
      for (;;) {
        try {
          m.ioc->run();
          return;
        } catch (const std::exception& e) {  // a handler threw: log, keep serving
          spdlog::error("{}: {}", m.state->limits.name, e.what());
        }
      }
    });
}

http_server::~http_server() {
  stop();
  for (std::thread& t : impl_->threads) t.join();
  if (impl_->h.before_teardown) impl_->h.before_teardown();
  {
    std::lock_guard lock(impl_->state->sink_mu);
    impl_->state->ioc = nullptr;
  }
  impl_->retry.reset();
  impl_->acceptor.reset();
  impl_->work.reset();
  impl_->ioc.reset();  // destroys the sessions (a gateway session cancels its request)
}

int http_server::port() const {
  return impl_->port;
}

bool http_server::loopback() const {
  return impl_->loopback;
}

void http_server::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  impl_->ioc->stop();
  impl_->cv.notify_all();
}

void http_server::wait() {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stopped; });
}

}  // namespace zf::actors
