#pragma once
// Internal to the gateway: http_server.* is the listener, http_connection.* one connection's
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
#include "actors/http_server.hpp"

namespace zf::actors::detail {

// Shared by the listener, every session and every event sink. Sinks may outlive the gateway
// (the backend drops them when it likes), so they hold this by shared_ptr and post into ioc only
// while it is non-null: the server sets it to null under sink_mu before destroying the context.
struct gateway_state : http_state {
  gateway_state(serve::completion_backend& b, const gateway_options& o, http_server_options h)
      : http_state(std::move(h)), backend(b), opts(o) {}

  serve::completion_backend& backend;
  gateway_options opts;
  int64_t created = 0;          // start time, for /v1/models
  bool weight_updates = false;  // /v1/update_weights_from_disk: loopback or enabled (on_bound)

  // Completion requests are parsed, tokenized and submitted here, off the io threads. Stopped
  // and joined after the io threads, before the io_context goes.
  std::unique_ptr<boost::asio::thread_pool> prepare;
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
