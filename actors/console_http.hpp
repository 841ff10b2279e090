#pragma once
// The console's HTTP side (console_server.hpp says what it serves): console_site answers one
// request as a reply or a stream; the connection (http_connection.hpp) does the I/O, in the
// console's own server or in the gateway's under /console.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "actors/console_server.hpp"
#include "runtime/api/http_routes.hpp"
#include "runtime/monitor/run_index.hpp"

namespace zf::actors {

// What a console route needs of a request (views into it).
struct console_request {
  std::string_view method, target;
  std::optional<std::string_view> authorization, cookie, last_event_id;
};

class console_site {
 public:
  static constexpr std::chrono::milliseconds stream_every{250};  // an SSE stream's poll

  console_site(const console_options& o, std::string prefix);  // starts the reading thread
  ~console_site();                                             // stops and joins it
  console_site(const console_site&) = delete;
  console_site& operator=(const console_site&) = delete;

  // Whether the target's path is the prefix or under it.
  bool owns(std::string_view target) const;
  bool has_token() const { return !token_.empty(); }

  struct answer {
    std::string label;                                   // metrics label
    openai::http_reply reply;                            // the reply, or a stream's head
    std::function<std::optional<std::string>()> stream;  // set: poll it every stream_every
  };
  answer handle(const console_request& r) const;

 private:
  answer route(const console_request& r, std::string_view path, std::string_view query) const;
  std::shared_ptr<monitor::run_index> idx_;
  std::string token_, prefix_;
  double refresh_s_;
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

}  // namespace zf::actors
