// The gateway's listener and io threads; connections live in gateway_connection.cpp and
// gateway_session.cpp, the HTTP protocol in runtime/api/http_routes, openai_http and http_metrics.
//
// Shutdown order matters because event sinks can outlive everything here: stop() stops the
// io_context, the destructor joins the threads, closes the sink gate (state->ioc = nullptr) and
// only then destroys the io_context, whose pending handlers own the sessions: each session's
// destructor cancels its running request in the backend.
#include "actors/gateway.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <ctime>
#include <optional>
#include <thread>
#include <vector>

#include "actors/gateway_connection.hpp"
#include "runtime/api/http_routes.hpp"
#include "runtime/core/error.hpp"

namespace zf::actors {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct gateway::impl {
  std::shared_ptr<detail::gateway_state> state;
  std::unique_ptr<net::io_context> ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<net::steady_timer> retry;
  std::vector<std::thread> threads;
  int port = 0;

  std::mutex mu;
  std::condition_variable cv;
  bool stopped = false;

  void accept() {
    acceptor->async_accept(
        net::make_strand(*ioc), [this](boost::system::error_code ec, tcp::socket socket) {
          if (ec == net::error::operation_aborted) return;
          if (ec) {  // e.g. out of file descriptors: retry shortly instead of spinning
            spdlog::warn("gateway: accept failed: {}", ec.message());
            retry->expires_after(std::chrono::milliseconds(50));
            retry->async_wait([this](boost::system::error_code ec) {
              if (!ec) accept();
            });
            return;
          }
          const auto& o = state->opts;
          if (state->metrics.open_connections() < o.max_connections ||
              detail::connection::evict_oldest_idle(*state))
            detail::start_session(std::move(socket), state);
          else if (state->metrics.overflow_connections() < o.overflow_connections)
            detail::start_session(std::move(socket), state, true);  // /health, /metrics only
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

gateway::gateway(serve::completion_backend& backend, const gateway_options& o)
    : impl_(std::make_unique<impl>()) {
  impl& m = *impl_;
  m.state = std::make_shared<detail::gateway_state>(backend, o);
  m.state->created = static_cast<int64_t>(std::time(nullptr));
  m.state->prepare = std::make_unique<net::thread_pool>(std::max(1, o.prepare_threads));
  const int threads = std::max(1, o.io_threads);
  m.ioc = std::make_unique<net::io_context>(threads);
  m.work.emplace(m.ioc->get_executor());
  m.acceptor = std::make_unique<tcp::acceptor>(net::make_strand(*m.ioc));
  m.retry = std::make_unique<net::steady_timer>(m.acceptor->get_executor());

  boost::system::error_code ec;
  auto cannot = [&](const boost::system::error_code& ec) {
    fail("gateway: cannot listen on {}:{}: {}", o.host, o.port, ec.message());
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
  m.state->weight_updates = o.enable_weight_updates || ep.address().is_loopback();
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
          spdlog::error("gateway: {}", e.what());
        }
      }
    });
}

gateway::~gateway() {
  stop();
  for (std::thread& t : impl_->threads) t.join();
  // Requests still on the prepare pool finish (their continuations queue on the stopped
  // io_context, destroyed below, which cancels what they submitted); queued ones are dropped.
  impl_->state->prepare->stop();
  impl_->state->prepare->join();
  {
    std::lock_guard lock(impl_->state->sink_mu);
    impl_->state->ioc = nullptr;
  }
  impl_->retry.reset();
  impl_->acceptor.reset();
  impl_->work.reset();
  impl_->ioc.reset();  // destroys the sessions: their destructors cancel running requests
}

int gateway::port() const {
  return impl_->port;
}

std::string gateway::metrics_text() const {
  return impl_->state->metrics.text(impl_->state->backend.metrics_text());
}

void gateway::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  impl_->ioc->stop();
  impl_->cv.notify_all();
}

void gateway::wait() {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stopped; });
}

}  // namespace zf::actors
