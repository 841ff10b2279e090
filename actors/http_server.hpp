#pragma once
// The HTTP/1.1 server under the gateway (OpenAI API) and the console (issue 11): a listener on
// io threads, one connection per socket on its own strand (http_connection.hpp), what a site
// does with a request left to its session class. Internal to actors/ (Asio stays out of the
// public headers gateway.hpp and console_server.hpp).
//
// Shutdown order matters because callbacks from other threads (a backend's event sinks) can
// outlive the server: stop() stops the io_context; the destructor joins the threads, runs the
// owner's before_teardown (the gateway stops its prepare pool), closes the gate (state->ioc =
// nullptr, under sink_mu) and only then destroys the io_context, whose pending handlers own the
// sessions.
// clang-format off
#include <utility>  // before Asio: under C++20 its awaitable.hpp needs std::exchange
#include <boost/asio.hpp>
// clang-format on

#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/api/http_metrics.hpp"

namespace zf::actors {

// The socket side's limits, shared by every site. See gateway_options for what each does.
struct http_server_options {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: an ephemeral port
  int io_threads = 2;
  int max_connections = 512;
  int overflow_connections = 64;
  int overflow_timeout_s = 2;
  std::size_t max_body_bytes = 1 << 20;
  int header_timeout_s = 10;
  int read_timeout_s = 60;
  int write_timeout_s = 30;
  std::size_t max_output_bytes = std::size_t{4} << 20;
  std::string name = "http";  // in log lines and the "cannot listen" error
};

namespace detail {

class connection;

// Connections waiting for a request with no byte of it received, oldest first: when every slot
// is taken, the listener closes the oldest of these to make room (idle keep-alive sockets must
// not lock out new clients). Each connection adds and removes itself; the listener takes.
class idle_connections {
 public:
  using list = std::list<std::weak_ptr<connection>>;
  // Adds c unless *at is set (already listed); removes it when *at is set. Under the lock: the
  // listener may take the entry concurrently and clear *at.
  void add(const std::shared_ptr<connection>& c, std::optional<list::iterator>& at) {
    std::lock_guard lock(mu_);
    if (!at) at = conns_.insert(conns_.end(), c);
  }
  void remove(std::optional<list::iterator>& at) {
    std::lock_guard lock(mu_);
    if (at) conns_.erase(*at);
    at.reset();
  }
  // The oldest idle connection still alive, unlisted (its `at` cleared through at_of), or null.
  template <class AtOf>
  std::shared_ptr<connection> take_oldest(AtOf at_of) {
    std::lock_guard lock(mu_);
    while (!conns_.empty()) {
      std::shared_ptr<connection> c = conns_.front().lock();
      conns_.pop_front();
      if (c) {
        at_of(*c).reset();
        return c;
      }
    }
    return nullptr;
  }

 private:
  std::mutex mu_;
  list conns_;
};

// Shared by the listener and every connection of one server; a site derives from it for its own
// state (gateway_state). Holders on other threads post into ioc only while it is non-null, under
// sink_mu.
struct http_state {
  explicit http_state(http_server_options o) : limits(std::move(o)) {}
  virtual ~http_state() = default;
  http_server_options limits;
  std::mutex sink_mu;
  boost::asio::io_context* ioc = nullptr;
  idle_connections idle;
  openai::http_metrics metrics;
};

// Takes over an accepted socket (whose executor is a strand). overflow: over max_connections.
using session_factory = std::function<void(boost::asio::ip::tcp::socket, bool overflow)>;

}  // namespace detail

class http_server {
 public:
  struct hooks {
    std::function<void(bool loopback)> on_bound;  // bound, before the first accept
    std::function<void()> before_teardown;        // threads joined, sessions still alive
  };
  // Binds, listens and starts the io threads. Throws zf::error
  // "<name>: cannot listen on HOST:PORT: <reason>".
  http_server(std::shared_ptr<detail::http_state> state, detail::session_factory start,
              hooks h = {});
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  int port() const;
  bool loopback() const;  // bound to a loopback address
  void stop();            // thread-safe, idempotent
  void wait();            // blocks until stop()

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace zf::actors
