#pragma once
// The OpenAI-compatible HTTP/1.1 gateway in front of a serve::completion_backend (Boost.Beast;
// the only Asio user in zeroflow, so this header hides it).
//
//   POST /v1/completions, POST /v1/chat/completions   JSON, or SSE when "stream": true
//   GET  /v1/models   GET /health   GET /metrics (Prometheus text: backend + HTTP counters)
//   GET  /console/...  the live console, when gateway_options::console is set
//   POST /v1/update_weights_from_disk   {"path": "<model folder>", "version": N}: the backend
//        loads the folder and swaps the weights in (SGLang's endpoint). It reads files on the
//        server, so it answers 403 unless the gateway listens on a loopback address or
//        enable_weight_updates is set.
//
// Threads: io_threads run every connection, each on its own strand; completion requests are
// parsed, tokenized and submitted on prepare_threads (a long prompt never delays /health); the
// backend's events arrive on its thread through the sink and are posted onto the connection's
// strand. A client that
// disconnects while its request runs is noticed by a read kept pending on the socket, and the
// request is cancelled in the backend at once.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "runtime/serve/serving.hpp"

namespace zf::actors {

class console_site;

struct gateway_options {
  std::string host = "127.0.0.1";
  int port = 8000;          // 0: an ephemeral port (see gateway::port())
  int io_threads = 2;       // accept and run connections; never tokenize
  int prepare_threads = 2;  // parse, tokenize and submit completion requests
  // Request slots. When all are taken, a new connection closes the one idle longest (waiting
  // for a request, none of it received); if none is idle, up to overflow_connections more are
  // read for one request with overflow_timeout_s: GET /health and /metrics are answered,
  // anything else gets 503; beyond those, 503 at once. So neither idle sockets nor busy ones
  // make /health fail.
  int max_connections = 512;
  int overflow_connections = 64;
  int overflow_timeout_s = 2;
  std::size_t max_body_bytes = 1 << 20;                   // larger request bodies get 413
  std::size_t max_prompt_bytes = std::size_t{256} << 10;  // longer prompts: 400, not tokenized
  int header_timeout_s = 10;  // a request's headers, and an idle keep-alive connection
  int read_timeout_s = 60;    // a request's body; not while generating
  int write_timeout_s = 30;   // a write that makes no progress: the client is dropped and its
                              // request cancelled (its KV blocks freed)
  std::size_t max_output_bytes = std::size_t{4} << 20;  // response bytes queued for one
                                                        // connection; over: dropped, cancelled
  bool enable_weight_updates = false;   // POST /v1/update_weights_from_disk on any address
  std::vector<std::string> api_keys{};  // non-empty: every /v1/ route needs
                                        // `Authorization: Bearer <one of them>`, else 401
  bool protect_metrics = false;         // /metrics needs a key too
  // Set: the console (console_server.hpp) under /console on this port, with its own token
  // rule (the API keys do not open it). make_console_site(o, "/console") makes one.
  std::shared_ptr<console_site> console;
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
  // What GET /metrics answers (the backend's metrics and the HTTP ones), without a connection.
  std::string metrics_text() const;
  void stop();  // thread-safe, idempotent; connections are closed by the destructor
  void wait();  // blocks until stop()

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace zf::actors
