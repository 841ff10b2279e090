#pragma once
// One OpenAI request's HTTP answer, without sockets: what actors/gateway_session writes for each
// route once http_routes.hpp has routed it.
//
// POST /v1/completions, POST /v1/chat/completions (http_completion): the body is parsed and
// validated (runtime/api/openai.hpp), submitted to the backend with the session's sink, and each
// event the sink hands back becomes bytes for the socket:
//   streaming:     head() at once (200, Content-Type: text/event-stream, Cache-Control: no-cache,
//                  chunked); per event its SSE text ("data: {...}\n\n") as one HTTP chunk; once
//                  every choice finished, the usage chunk (stream_options.include_usage),
//                  "data: [DONE]\n\n" and the zero-length last chunk. An HTTP/1.0 client knows
//                  no chunked encoding (options.chunked false): the head has neither length nor
//                  chunking, the SSE text goes out as it is, and closing the connection ends it.
//   not streaming: nothing until every choice finished, then one 200 JSON reply; 503
//                  server_error when the server cancelled the request (shutdown).
// A body that fails validation, or a submit the backend refuses, is refused() and nothing runs:
// 429 rate_limit_exceeded carries Retry-After (the backend's seconds, at least 1).
//
// POST /v1/update_weights_from_disk: weights_update_request checks the switch (403 unless the
// gateway listens on loopback or weight updates are enabled) and the body; the session hands the
// folder to the backend and answers with weights_update_reply once it is done.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "runtime/api/http_routes.hpp"
#include "runtime/api/openai.hpp"
#include "runtime/serve/serving.hpp"

namespace zf::openai {

struct completion_options {
  std::size_t max_prompt_bytes = default_max_prompt_bytes;  // see parse_request
  bool chunked = true;  // false: an HTTP/1.0 client; a stream ends when the connection closes
};

class http_completion {
 public:
  // Parses `body`, then submits it with `sink` (which must not call back into this object
  // synchronously: the gateway's sink only queues). Throws what the backend's encode throws.
  http_completion(endpoint kind, std::string_view body, serve::completion_backend& backend,
                  serve::event_sink sink, const completion_options& options = {});

  const std::optional<http_reply>& refused() const { return refused_; }
  uint64_t id() const { return id_; }  // the backend's request id (for cancel) unless refused
  bool streaming() const { return stream_; }
  // Submitted and not every choice finished: cancel it in the backend if the client leaves.
  bool running() const { return writer_ && !writer_->done(); }
  http_reply head() const;  // streaming: the response head, written before any event

  struct output {
    std::string chunks;               // streaming: bytes for the chunked body (may be empty)
    std::optional<http_reply> reply;  // not streaming, once finished: the whole response
    bool last = false;                // streaming: `chunks` end the response
  };
  // One event of this request, while running().
  output on_event(const serve::completion_event& e);

 private:
  std::optional<http_reply> refused_;
  std::optional<response_writer> writer_;
  bool stream_ = false;
  bool chunked_ = true;
  uint64_t id_ = 0;
};

// GET /v1/models, GET /health, GET /metrics (Prometheus text exposition 0.0.4).
http_reply models_reply(const serve::completion_backend& backend, int64_t created);
http_reply health_reply();
http_reply metrics_reply(std::string text);

// POST /v1/update_weights_from_disk: the folder and version to load, or the answer (403
// permission_error when !enabled, 400 for a bad body).
std::variant<weights_update, http_reply> weights_update_request(std::string_view body,
                                                                bool enabled);
// The answer once the backend is done: 200 {"success": true, "version", "message"}, or the error.
http_reply weights_update_reply(const serve::weights_result& r);

}  // namespace zf::openai
