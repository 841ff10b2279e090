// One HTTP/1.1 connection of the gateway. Everything below runs on the connection's strand.
//
// Life of a request:
//   read_header -> (100 Continue) -> read_body -> handle: route
//     simple routes: send a string response -> response_done -> read_header (keep-alive)
//     completions:   parse + submit to the backend; the sink posts events onto this strand;
//                    streaming: chunked headers, then each event as SSE bytes, coalesced into
//                    one write while the previous is in flight; otherwise one JSON response
//                    once all n choices have finished.
//     weight update: parse + hand the folder to the backend; its answer is posted onto this
//                    strand the same way, after the swap (or the refusal).
// While a request is generating, watch() keeps a read pending on the socket: EOF or an error
// means the client left, and close() cancels the request in the backend at once. Bytes a
// pipelining client sends meanwhile are kept in buffer_ for the next read_header.
// The session is kept alive only by its pending operations; sinks hold a weak_ptr.

// clang-format off
#include "actors/gateway_session.hpp"  // first: it orders <utility> before Asio
// clang-format on

#include <fmt/format.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <ctime>
#include <optional>

#include "runtime/openai.hpp"

namespace zf::actors::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr std::size_t max_pipelined_bytes = 64 * 1024;

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket s, std::shared_ptr<gateway_state> st)
      : stream_(std::move(s)), st_(std::move(st)) {
    ++st_->open_connections;
  }
  ~session() {
    if (active_) st_->backend.cancel(backend_id_);  // gateway shutdown with a request running
    --st_->open_connections;
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

 private:
  using string_response = http::response<http::string_body>;

  // ---- reading a request
  void read_header() {
    if (closed_) return;
    route_ = "other";
    parser_.emplace();
    parser_->body_limit(st_->opts.max_body_bytes);
    stream_.expires_after(std::chrono::seconds(st_->opts.read_timeout_s));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (closed_) return;
    if (ec) return read_failed(ec);
    if (parser_->is_done()) return on_body({});
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(cont),
                       [self = shared_from_this()](beast::error_code ec, std::size_t) {
                         if (ec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    if (closed_) return;
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    if (closed_) return;
    if (ec) return read_failed(ec);
    stream_.expires_never();  // no timeout while the answer is generated
    http::request<http::string_body> req = parser_->release();
    keep_alive_ = req.keep_alive();
    try {
      handle(req);
    } catch (const std::exception& e) {  // e.g. the backend's encode threw
      if (!streaming_ && !active_)
        send_error(
            openai::make_error(500, fmt::format("internal error: {}", e.what()), "server_error"));
      else
        close();
    }
  }

  void read_failed(beast::error_code ec) {
    keep_alive_ = false;  // the rest of the stream cannot be trusted
    drain_on_close_ = true;
    if (ec == http::error::body_limit)
      return send_error(openai::make_error(
          413,
          fmt::format("the request body exceeds the limit of {} bytes", st_->opts.max_body_bytes)));
    if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message)
      return send_error(
          openai::make_error(400, fmt::format("malformed HTTP request: {}", ec.message())));
    close();  // EOF, timeout, reset
  }

  // With api_keys set, every route but /health needs one of them as a bearer token (OpenAI's
  // scheme). The comparison does not stop at the first differing byte.
  bool authorized(const http::request<http::string_body>& req, std::string_view target) const {
    const auto& keys = st_->opts.api_keys;
    if (keys.empty() || target == "/health") return true;
    const auto it = req.find(http::field::authorization);
    if (it == req.end()) return false;
    const std::string_view v(it->value().data(), it->value().size());
    if (!v.starts_with("Bearer ")) return false;
    const std::string_view given = v.substr(7);
    bool ok = false;
    for (const std::string& k : keys) {
      unsigned diff = static_cast<unsigned>(k.size() ^ given.size());
      for (std::size_t i = 0; i < k.size(); ++i)
        diff |= static_cast<unsigned char>(k[i]) ^
                static_cast<unsigned char>(i < given.size() ? given[i] : 0);
      ok |= diff == 0;
    }
    return ok;
  }

  // ---- routing
  void handle(const http::request<http::string_body>& req) {
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    std::string method(req.method_string());
    struct route {
      std::string_view path;
      http::verb verb;
    };
    static constexpr route routes[] = {
        {"/v1/completions", http::verb::post}, {"/v1/chat/completions", http::verb::post},
        {"/v1/models", http::verb::get},       {"/health", http::verb::get},
        {"/metrics", http::verb::get},         {"/v1/update_weights_from_disk", http::verb::post},
    };
    const route* r = nullptr;
    for (const route& x : routes)
      if (x.path == target) r = &x;
    if (!r)
      return send_error(openai::make_error(404, fmt::format("Not found: {} {}", method, target),
                                           "invalid_request_error", "not_found"));
    route_ = std::string(r->path);
    if (!authorized(req, target))
      return send_error(
          openai::make_error(401, "Incorrect API key provided: send `Authorization: Bearer <key>`",
                             "invalid_request_error", "invalid_api_key"));
    if (req.method() != r->verb) {
      allow_ = r->verb == http::verb::get ? "GET" : "POST";
      return send_error(openai::make_error(
          405, fmt::format("Method {} not allowed on {} (use {})", method, target, allow_)));
    }
    if (target == "/v1/completions") return generate(openai::endpoint::completions, req.body());
    if (target == "/v1/chat/completions") return generate(openai::endpoint::chat, req.body());
    if (target == "/v1/models")
      return send(200, "application/json", openai::models_body(st_->backend, st_->created));
    if (target == "/health") return send(200, "application/json", R"({"status":"ok"})");
    if (target == "/v1/update_weights_from_disk") return update_weights(req.body());
    send(200, "text/plain; version=0.0.4; charset=utf-8", st_->metrics_text());
  }

  // ---- complete (non-streamed) responses
  void send(int status, std::string_view content_type, std::string body, int retry_after = 0) {
    st_->count(route_, status);
    auto res = std::make_shared<string_response>(static_cast<http::status>(status), 11);
    res->set(http::field::server, "zeroflow");
    res->set(http::field::content_type,
             beast::string_view(content_type.data(), content_type.size()));
    if (retry_after > 0) res->set(http::field::retry_after, std::to_string(retry_after));
    if (!allow_.empty()) res->set(http::field::allow, std::exchange(allow_, {}));
    res->keep_alive(keep_alive_);
    res->body() = std::move(body);
    res->prepare_payload();
    res_ = res;
    stream_.expires_after(std::chrono::seconds(st_->opts.read_timeout_s));  // a client not reading
    http::async_write(stream_, *res,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (self->closed_) return;
                        self->res_.reset();
                        if (ec) return self->close();
                        self->response_done();
                      });
  }

  void send_error(const openai::api_error& e, int retry_after = 0) {
    send(e.status, "application/json", e.body(), retry_after);
  }

  // The response is fully written: next request, after stopping the disconnect watch.
  void response_done() {
    writer_.reset();
    streaming_ = false;
    if (!keep_alive_) return drain_on_close_ ? drain() : close();
    if (watching_) {  // on_watch continues with read_header
      next_after_watch_ = true;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
      return;
    }
    read_header();
  }

  // ---- completions
  void generate(openai::endpoint kind, const std::string& body) {
    auto parsed = openai::parse_request(kind, body, st_->backend);
    if (auto* e = std::get_if<openai::api_error>(&parsed)) return send_error(*e);
    openai::request& r = std::get<openai::request>(parsed);
    writer_.emplace(r, st_->backend, openai::new_response_id(kind),
                    static_cast<int64_t>(std::time(nullptr)));
    // Events are posted to this strand, so none is handled before this function returns.
    serve::submit_result sub = st_->backend.submit(std::move(r.completion), make_sink(++gen_));
    if (sub.status != 200) {
      writer_.reset();
      return send_error(openai::submit_error(sub),
                        sub.status == 429 ? std::max(1, sub.retry_after_s) : 0);
    }
    active_ = true;
    backend_id_ = sub.id;
    streaming_ = r.stream;
    if (streaming_) {
      st_->count(route_, 200);
      stream_res_ = {http::status::ok, 11};
      stream_res_.set(http::field::server, "zeroflow");
      stream_res_.set(http::field::content_type, "text/event-stream");
      stream_res_.set(http::field::cache_control, "no-cache");
      stream_res_.keep_alive(keep_alive_);
      stream_res_.chunked(true);
      header_sr_.emplace(stream_res_);
      writing_ = true;
      http::async_write_header(
          stream_, *header_sr_,
          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_written(ec); });
    }
    watch();
  }

  // The sink runs on the backend's thread: it never blocks on I/O and never touches the session.
  // Events go into inbox_ in order; the first one of a batch posts one drain onto the
  // io_context (not the strand: a sink may outlive the io_context and the strand's executor
  // must not, so the hop to the strand happens on an io thread, through the weak_ptr). The
  // gateway nulls st->ioc under sink_mu before destroying the io_context.
  serve::event_sink make_sink(uint64_t gen) {
    return
        [weak = weak_from_this(), st = st_, box = inbox_, gen](const serve::completion_event& e) {
          {
            std::lock_guard lock(box->mu);
            box->events.emplace_back(gen, e);
            if (std::exchange(box->scheduled, true)) return;  // a drain is already on its way
          }
          post_from_backend(st, weak, [](session& s) { s.drain_inbox(); });
        };
  }

  // Runs fn(session) on the session's strand, from a backend thread, while the gateway and the
  // session live: through the io_context, then the weak_ptr (see make_sink).
  template <class F>
  static void post_from_backend(const std::shared_ptr<gateway_state>& st,
                                std::weak_ptr<session> weak, F fn) {
    std::lock_guard lock(st->sink_mu);
    if (!st->ioc) return;
    net::post(*st->ioc, [weak = std::move(weak), fn = std::move(fn)]() mutable {
      if (auto s = weak.lock())
        net::dispatch(s->stream_.get_executor(), [s, fn = std::move(fn)]() mutable { fn(*s); });
    });
  }

  void drain_inbox() {
    std::vector<std::pair<uint64_t, serve::completion_event>> events;
    {
      std::lock_guard lock(inbox_->mu);
      events.swap(inbox_->events);
      inbox_->scheduled = false;
    }
    for (const auto& [gen, e] : events) on_event(gen, e);
  }

  void on_event(uint64_t gen, const serve::completion_event& e) {
    if (closed_ || gen != gen_ || !active_ || !writer_) return;  // a previous request's event
    std::string text = writer_->on_event(e);
    if (streaming_) append_chunk(text);
    if (!writer_->done()) return flush();
    active_ = false;
    if (streaming_) {
      append_chunk(writer_->stream_tail());
      out_ += "0\r\n\r\n";  // last chunk
      finishing_ = true;
      return flush();
    }
    if (writer_->cancelled())
      return send_error(
          openai::make_error(503, "the request was cancelled by the server", "server_error"));
    send(200, "application/json", writer_->body());
  }

  // ---- weight updates: the backend loads the folder off its engine thread and swaps it in
  void update_weights(const std::string& body) {
    if (!st_->weight_updates)
      return send_error(openai::make_error(
          403,
          "weight updates are disabled: this server listens on a non-loopback address (start it "
          "with --enable-weight-updates to allow them)",
          "permission_error"));
    auto parsed = openai::parse_weights_update(body);
    if (auto* e = std::get_if<openai::api_error>(&parsed)) return send_error(*e);
    auto& u = std::get<openai::weights_update>(parsed);
    updating_ = true;
    st_->backend.update_weights_from_disk(
        std::move(u.path), u.version,
        [weak = weak_from_this(), st = st_](const serve::weights_result& r) {
          post_from_backend(st, weak, [r](session& s) { s.on_weights_done(r); });
        });
    watch();  // keeps the session alive meanwhile (the callback holds a weak_ptr)
  }

  void on_weights_done(const serve::weights_result& r) {
    if (closed_ || !std::exchange(updating_, false)) return;
    if (r.status != 200) return send_error(openai::weights_update_error(r));
    send(200, "application/json", openai::weights_update_body(r));
  }

  // ---- streamed writes: out_ collects chunks while wbuf_ is being written
  void append_chunk(const std::string& data) { out_ += openai::http_chunk(data); }

  void flush() {
    if (closed_ || writing_ || out_.empty()) return;
    wbuf_.swap(out_);
    out_.clear();
    writing_ = true;
    net::async_write(
        stream_, net::buffer(wbuf_),
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_written(ec); });
  }

  void on_written(beast::error_code ec) {
    writing_ = false;
    wbuf_.clear();
    if (closed_) return;
    if (ec) return close();  // client gone: cancels the request
    if (!out_.empty()) return flush();
    if (finishing_) {
      finishing_ = false;
      header_sr_.reset();
      response_done();
    }
  }

  // ---- disconnect detection while a request runs
  void watch() {
    if (buffer_.size() >= max_pipelined_bytes) return close();
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->on_watch(ec, n);
                            });
  }

  void on_watch(beast::error_code ec, std::size_t n) {
    watching_ = false;
    if (closed_) return;
    if (!ec) buffer_.commit(n);  // a pipelined request: parsed after this response
    if (next_after_watch_) {
      next_after_watch_ = false;
      if (!ec || ec == net::error::operation_aborted) return read_header();
      return close();
    }
    if (ec) return close();  // EOF or reset: the client left
    watch();
  }

  // After an error answer to a request whose body was not read (413): half-close and discard
  // what the client still sends (up to 1 MiB, 2 s), so that closing does not reset the
  // connection before the client has read the answer.
  void drain() {
    if (drained_ == 0) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      stream_.expires_after(std::chrono::seconds(2));
    }
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->drained_ += n + 1;
                              if (ec || self->drained_ > (1u << 20)) return self->close();
                              self->drain();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (active_) {
      active_ = false;
      st_->backend.cancel(backend_id_);
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  std::shared_ptr<gateway_state> st_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string route_ = "other";  // metrics label of the current request
  std::string allow_;            // Allow header of a 405
  bool keep_alive_ = true;
  bool closed_ = false;
  bool drain_on_close_ = false;
  std::size_t drained_ = 0;

  std::shared_ptr<string_response> res_;  // a complete response being written

  std::shared_ptr<event_inbox> inbox_ = std::make_shared<event_inbox>();
  uint64_t gen_ = 0;     // bumped per submitted request; stale events are dropped
  bool active_ = false;  // the backend request backend_id_ is running
  uint64_t backend_id_ = 0;
  std::optional<openai::response_writer> writer_;
  bool streaming_ = false;
  http::response<http::empty_body> stream_res_;
  std::optional<http::response_serializer<http::empty_body>> header_sr_;
  std::string out_, wbuf_;
  bool writing_ = false;
  bool finishing_ = false;  // the last chunk is queued: response_done once written

  bool watching_ = false;
  bool next_after_watch_ = false;
  bool updating_ = false;  // a weight update's answer is awaited
};

}  // namespace

void start_session(tcp::socket socket, std::shared_ptr<gateway_state> state) {
  std::make_shared<session>(std::move(socket), std::move(state))->start();
}

}  // namespace zf::actors::detail
