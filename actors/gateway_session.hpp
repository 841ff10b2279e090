#pragma once
// Internal to the gateway (gateway.cpp: listener, gateway_session.cpp: one connection).
// clang-format off
#include <utility>  // before Asio: under C++20 its awaitable.hpp needs std::exchange
#include <boost/asio.hpp>
// clang-format on

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/gateway.hpp"

namespace zf::actors::detail {

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

  std::atomic<int> open_connections{0};
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (route, status) -> count

  void count(std::string_view route, int status);
  std::string metrics_text();
};

// A session's pending events, in order, filled by its sink on the backend's thread: (request
// generation, event); `scheduled` while a drain is on its way to the session's strand.
struct event_inbox {
  std::mutex mu;
  std::vector<std::pair<uint64_t, serve::completion_event>> events;
  bool scheduled = false;
};

// Takes over an accepted socket (whose executor is a strand) and serves it until it closes.
void start_session(boost::asio::ip::tcp::socket socket, std::shared_ptr<gateway_state> state);

}  // namespace zf::actors::detail
