#pragma once
// One HTTP/1.1 connection's socket work for an http_server; gateway_session.cpp derives the
// OpenAI server from it, console_http.cpp the console. Everything runs on the connection's strand.
//
//   read_header -> (100 Continue) -> read_body -> handle(request)        [the derived class]
//   send(reply): the reply's bytes (runtime/api/http_routes.hpp), then, once written, the next
//     read_header (keep-alive) or close. A chunked (or close-delimited) reply's head is followed
//     by write(bytes), coalesced into one write while the previous is in flight, until
//     write(..., last).
//   Slow clients: headers must arrive within header_timeout_s (an idle keep-alive connection
//     too), a body within read_timeout_s; each write must make progress within write_timeout_s;
//     a stream's queued bytes may not exceed max_output_bytes. Any of these closes the
//     connection (which cancels its request) and is counted as dropped in /metrics.
//   An overflow connection (over max_connections) reads one request with overflow_timeout_s and
//     closes after the answer.
//   watch(): while a request runs, a read stays pending on the socket: EOF or an error means the
//     client left and close() runs (on_close cancels the request). Bytes a pipelining client
//     sends meanwhile are kept for the next read_header.
//   read errors: 413 (body over max_body_bytes) and 400 (malformed) are answered and the
//     connection closes after draining what the client still sends; EOF, timeout, reset close.
// The connection is kept alive only by its pending operations.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "actors/http_server.hpp"  // first: it orders <utility> before Asio
#include "runtime/api/http_routes.hpp"

namespace zf::actors::detail {

class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(boost::asio::ip::tcp::socket s, std::shared_ptr<http_state> st, bool overflow)
      : st_(std::move(st)), keep_alive_(!overflow), overflow_(overflow), stream_(std::move(s)) {
    st_->metrics.connection_opened(overflow_);
  }
  virtual ~connection() {
    st_->metrics.buffered(-accounted_);
    st_->metrics.connection_closed(overflow_);
  }
  void start();
  // The listener, with every slot taken: closes the connection idle the longest (waiting for a
  // request with none of it received), making room. False: there was none.
  static bool evict_oldest_idle(http_state& st);

 protected:
  using request = boost::beast::http::request<boost::beast::http::string_body>;
  // A whole request arrived (no read timeout from here on): answer with send(), or close().
  virtual void handle(const request& req) = 0;
  // close() began: stop what runs for this connection.
  virtual void on_close() {}

  // Counts the reply under label_ and queues its bytes; a complete reply (one whose body does not
  // follow) ends the response.
  void send(const openai::http_reply& r);
  // Bytes of a chunked or close-delimited body; `last`: they end the response. Over
  // max_output_bytes queued: the client is too slow, the connection closes.
  void write(std::string_view bytes, bool last);
  // A response fed from this strand over time (server-sent events): `head` (a chunked or
  // close-delimited reply) goes out now, then every `every` next() gives more body bytes (empty:
  // nothing yet; nullopt: the end). The client leaving closes it (watch()), as do the write
  // limits; so does a closed connection's timer, cancelled by close().
  using stream_source = std::function<std::optional<std::string>()>;
  void stream(const openai::http_reply& head, stream_source next, std::chrono::milliseconds every);
  void watch();
  void close();
  boost::asio::any_io_executor executor() { return stream_.get_executor(); }

  std::shared_ptr<http_state> st_;
  std::string label_ = "other";  // metrics label of the current request
  bool keep_alive_ = true;
  bool head_only_ = false;  // a HEAD request: replies carry no body
  bool closed_ = false;
  const bool overflow_;  // over max_connections: /health and /metrics only, one request

 private:
  using error_code = boost::beast::error_code;
  static constexpr std::size_t max_pipelined_bytes = 64 * 1024;  // kept while a request runs
  // A completion handler that keeps the connection alive and calls fn(ec, bytes).
  template <class Fn>
  auto on(Fn fn) {
    return
        [self = shared_from_this(), fn](error_code ec, std::size_t n) { (self.get()->*fn)(ec, n); };
  }
  void read_header();
  void on_header(error_code ec, std::size_t);
  void read_body(error_code ec, std::size_t);
  void on_body(error_code ec, std::size_t);
  void read_failed(error_code ec);
  void account();            // publishes the queued byte count to the buffered-output gauge
  void set_idle(bool idle);  // lists or unlists this connection in st_->idle
  void evict();              // on the strand: closes it if it is still idle
  void response_done();
  void flush();
  void on_written(error_code ec, std::size_t);
  void on_watch(error_code ec, std::size_t n);
  void drain(error_code ec, std::size_t n);
  void tick();

  std::unique_ptr<boost::asio::steady_timer> tick_;  // a stream's, while one runs
  stream_source next_;
  std::chrono::milliseconds every_{250};
  bool chunked_stream_ = false;

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  bool drain_on_close_ = false;
  std::size_t drained_ = 0;
  std::string out_, wbuf_;  // queued bytes; bytes being written (from woff_ on)
  std::size_t woff_ = 0;
  int64_t accounted_ = 0;  // out_ and wbuf_'s unwritten bytes, as last published
  bool reading_body_ = false;
  std::optional<idle_connections::list::iterator> idle_at_;  // listed as idle (under its lock)
  bool writing_ = false;
  bool finishing_ = false;  // the response's last bytes are queued: response_done once written
  bool watching_ = false;
  bool next_after_watch_ = false;
};

}  // namespace zf::actors::detail
