#pragma once
// Internal to the gateway: gateway.cpp is the listener, gateway_connection.* one connection's
// socket work, gateway_session.cpp the OpenAI server on top of a connection. The protocol
// (routes, keys, replies, SSE) is runtime/api/http_routes.hpp and runtime/api/openai_http.hpp.
// clang-format off
#include <utility>  // before Asio: under C++20 its awaitable.hpp needs std::exchange
#include <boost/asio.hpp>
// clang-format on

#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "actors/gateway.hpp"
#include "runtime/api/http_metrics.hpp"

namespace zf::actors::detail {

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

// Shared by the listener, every session and every event sink. Sinks may outlive the gateway
// (the backend drops them when it likes), so they hold this by shared_ptr and post into ioc only
// while it is non-null: the gateway sets it to null under sink_mu before destroying the context.
struct gateway_state {
  gateway_state(serve::completion_backend& b, const gateway_options& o) : backend(b), opts(o) {}

  serve::completion_backend& backend;
  gateway_options opts;
  int64_t created = 0;          // start time, for /v1/models
  bool weight_updates = false;  // /v1/update_weights_from_disk: loopback or enabled

  std::mutex sink_mu;
  boost::asio::io_context* ioc = nullptr;

  // Completion requests are parsed, tokenized and submitted here, off the io threads. Stopped
  // and joined by ~gateway before the io_context goes.
  std::unique_ptr<boost::asio::thread_pool> prepare;

  idle_connections idle;

  openai::http_metrics metrics;
};

// A session's pending events, in order, filled by its sink on the backend's thread: (request
// generation, event). The first push of a batch returns true: its caller posts one drain onto
// the session's strand, which take()s the batch; later pushes ride along with it.
class event_inbox {
 public:
  using entry = std::pair<uint64_t, serve::completion_event>;
  bool push(uint64_t gen, const serve::completion_event& e) {
    std::lock_guard lock(mu_);
    events_.emplace_back(gen, e);
    return !std::exchange(scheduled_, true);
  }
  std::vector<entry> take() {
    std::lock_guard lock(mu_);
    scheduled_ = false;
    return std::exchange(events_, {});
  }

 private:
  std::mutex mu_;
  std::vector<entry> events_;
  bool scheduled_ = false;
};

// Takes over an accepted socket (whose executor is a strand) and serves it until it closes.
// overflow: the socket is over max_connections; it gets /health and /metrics only.
void start_session(boost::asio::ip::tcp::socket socket, std::shared_ptr<gateway_state> state,
                   bool overflow = false);

}  // namespace zf::actors::detail
