#pragma once
// The OpenAI-compatible HTTP/1.1 gateway in front of a serve::completion_backend (Boost.Beast;
// the only Asio user in zeroflow, so this header hides it).
//
//   POST /v1/completions, POST /v1/chat/completions   JSON, or SSE when "stream": true
//   GET  /v1/models   GET /health   GET /metrics (Prometheus text: backend + HTTP counters)
//   POST /v1/update_weights_from_disk   {"path": "<model folder>", "version": N}: the backend
//        loads the folder and swaps the weights in (SGLang's endpoint). It reads files on the
//        server, so it answers 403 unless the gateway listens on a loopback address or
//        enable_weight_updates is set.
//
// Threads: io_threads run every connection, each on its own strand; the backend's events arrive
// on its thread through the sink and are posted onto the connection's strand. A client that
// disconnects while its request runs is noticed by a read kept pending on the socket, and the
// request is cancelled in the backend at once.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "runtime/serve/serving.hpp"

namespace zf::actors {

struct gateway_options {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: an ephemeral port (see gateway::port())
  int io_threads = 2;
  int max_connections = 512;             // more are answered 503 and closed
  std::size_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  int read_timeout_s = 60;               // request headers and body; not while generating
  bool enable_weight_updates = false;    // POST /v1/update_weights_from_disk on any address
  std::vector<std::string> api_keys;     // non-empty: every /v1/ route needs
                                         // `Authorization: Bearer <one of them>`, else 401
  bool protect_metrics = false;          // /metrics needs a key too
};

class gateway {
 public:
  // Binds, listens and starts the io threads. Throws zf::error
  // "gateway: cannot listen on HOST:PORT: <reason>". backend must outlive the gateway.
  gateway(serve::completion_backend& backend, const gateway_options& o);
  // Stops, joins the io threads, closes every connection and cancels its request in the backend.
  ~gateway();
  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  int port() const;  // the bound port
  void stop();       // thread-safe, idempotent; connections are closed by the destructor
  void wait();       // blocks until stop()

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace zf::actors
