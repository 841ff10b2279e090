// The HTTP answers of the OpenAI routes: completions (JSON or chunked SSE), models, health,
// metrics and weight updates; see openai_http.hpp.
#include "runtime/api/openai_http.hpp"

#include <algorithm>
#include <ctime>

namespace zf::openai {

http_completion::http_completion(endpoint kind, std::string_view body,
                                 serve::completion_backend& backend, serve::event_sink sink,
                                 const completion_options& options)
    : chunked_(options.chunked) {
  auto parsed = parse_request(kind, body, backend, options.max_prompt_bytes);
  if (auto* e = std::get_if<api_error>(&parsed)) {
    refused_ = error_reply(*e);
    return;
  }
  request& r = std::get<request>(parsed);
  writer_.emplace(r, backend, new_response_id(kind), static_cast<int64_t>(std::time(nullptr)));
  serve::submit_result sub = backend.submit(std::move(r.completion), std::move(sink));
  if (sub.status != 200) {
    writer_.reset();
    refused_ =
        error_reply(submit_error(sub), sub.status == 429 ? std::max(1, sub.retry_after_s) : 0);
    return;
  }
  id_ = sub.id;
  stream_ = r.stream;
}

http_reply http_completion::head() const {
  http_reply r{200, {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}}, {}};
  r.chunked = chunked_;
  r.close_delimited = !chunked_;
  return r;
}

http_completion::output http_completion::on_event(const serve::completion_event& e) {
  output out;
  std::string text = writer_->on_event(e);
  auto frame = [&](std::string t) { return chunked_ ? http_chunk(t) : t; };
  if (stream_) out.chunks = frame(std::move(text));
  if (!writer_->done()) return out;
  if (stream_) {
    out.chunks += frame(writer_->stream_tail());
    if (chunked_) out.chunks += last_chunk;
    out.last = true;
  } else if (writer_->cancelled()) {
    out.reply =
        error_reply(make_error(503, "the request was cancelled by the server", "server_error"));
  } else {
    out.reply = json_reply(200, writer_->body());
  }
  return out;
}

http_reply models_reply(const serve::completion_backend& backend, int64_t created) {
  return json_reply(200, models_body(backend, created));
}

http_reply health_reply() {
  return json_reply(200, R"({"status":"ok"})");
}

http_reply metrics_reply(std::string text) {
  return {200, {{"Content-Type", "text/plain; version=0.0.4; charset=utf-8"}}, std::move(text)};
}

std::variant<weights_update, http_reply> weights_update_request(std::string_view body,
                                                                bool enabled) {
  if (!enabled)
    return error_reply(make_error(
        403,
        "weight updates are disabled: this server listens on a non-loopback address (start it "
        "with --enable-weight-updates to allow them)",
        "permission_error"));
  auto parsed = parse_weights_update(body);
  if (auto* e = std::get_if<api_error>(&parsed)) return error_reply(*e);
  return std::get<weights_update>(std::move(parsed));
}

http_reply weights_update_reply(const serve::weights_result& r) {
  if (r.status != 200) return error_reply(weights_update_error(r));
  return json_reply(200, weights_update_body(r));
}

}  // namespace zf::openai
