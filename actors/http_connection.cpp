// One connection's socket work; see http_connection.hpp.
#include "actors/http_connection.hpp"

#include <chrono>

#include "runtime/api/openai.hpp"  // http_chunk

namespace zf::actors::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

void connection::start() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
}

void connection::read_header() {
  if (closed_) return;
  label_ = "other";
  parser_.emplace();
  parser_->body_limit(st_->limits.max_body_bytes);
  reading_body_ = false;
  if (!overflow_ && buffer_.size() == 0) set_idle(true);
  const int timeout = overflow_ ? st_->limits.overflow_timeout_s : st_->limits.header_timeout_s;
  stream_.expires_after(std::chrono::seconds(timeout));
  http::async_read_header(stream_, buffer_, *parser_, on(&connection::on_header));
}

void connection::on_header(error_code ec, std::size_t) {
  set_idle(false);
  if (closed_) return;
  if (ec) return read_failed(ec);
  if (parser_->is_done()) return on_body({}, 0);
  reading_body_ = true;
  stream_.expires_after(std::chrono::seconds(st_->limits.read_timeout_s));
  if (!beast::iequals(parser_->get()[http::field::expect], "100-continue")) return read_body({}, 0);
  static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
  net::async_write(stream_, net::buffer(cont), on(&connection::read_body));
}

void connection::read_body(error_code ec, std::size_t) {
  if (ec) return close();  // the 100 Continue could not be written
  if (closed_) return;
  http::async_read(stream_, buffer_, *parser_, on(&connection::on_body));
}

void connection::on_body(error_code ec, std::size_t) {
  if (closed_) return;
  if (ec) return read_failed(ec);
  stream_.expires_never();  // no timeout while the answer is generated
  const request req = parser_->release();
  keep_alive_ = keep_alive_ && req.keep_alive();
  head_only_ = req.method() == http::verb::head;
  handle(req);
}

void connection::read_failed(error_code ec) {
  keep_alive_ = false;  // the rest of the stream cannot be trusted
  drain_on_close_ = true;
  if (ec == http::error::body_limit)
    return send(openai::body_too_large(st_->limits.max_body_bytes));
  if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message)
    return send(openai::malformed_request(ec.message()));
  if (ec == beast::error::timeout)  // idle: not a byte since the last response
    st_->metrics.dropped(reading_body_         ? "read_timeout"
                         : buffer_.size() == 0 ? "idle_timeout"
                                               : "header_timeout");
  close();  // EOF, timeout, reset
}

void connection::send(const openai::http_reply& r) {
  st_->metrics.count(label_, r.status);
  if (r.close_delimited) keep_alive_ = false;
  out_ += r.wire(keep_alive_, head_only_);
  if (!r.body_follows()) finishing_ = true;
  account();
  flush();
}

void connection::write(std::string_view bytes, bool last) {
  if (closed_) return;
  out_ += bytes;
  finishing_ = finishing_ || last;
  account();
  if (static_cast<std::size_t>(accounted_) > st_->limits.max_output_bytes) {
    st_->metrics.dropped("output_limit");  // the client reads slower than we generate
    return close();
  }
  flush();
}

void connection::stream(const openai::http_reply& head, stream_source next,
                        std::chrono::milliseconds every) {
  next_ = std::move(next);
  every_ = every;
  chunked_stream_ = head.chunked;
  send(head);
  watch();
  tick_ = std::make_unique<net::steady_timer>(stream_.get_executor());
  tick();
}

void connection::tick() {
  if (closed_ || !next_) return;
  std::optional<std::string> bytes = next_();
  if (!bytes) {  // the end: the last chunk, or (close-delimited) the close after the write
    next_ = nullptr;
    if (chunked_stream_) return write(openai::last_chunk, true);
    keep_alive_ = false;
    if (!writing_ && out_.empty()) return close();  // nothing left to send
    return write({}, true);                         // closes once the queued bytes are out
  }
  if (!bytes->empty()) write(chunked_stream_ ? openai::http_chunk(*bytes) : *bytes, false);
  if (closed_) return;
  tick_->expires_after(every_);
  tick_->async_wait([self = shared_from_this()](error_code ec) {
    if (!ec) self->tick();
  });
}

void connection::account() {
  const auto now = static_cast<int64_t>(out_.size() + wbuf_.size() - woff_);
  st_->metrics.buffered(now - accounted_);
  accounted_ = now;
}

// One write_some at a time, each given write_timeout_s to make progress (the timer applies to
// the write alone while the disconnect watch's read is pending). Buffers keep their capacity.
void connection::flush() {
  if (closed_ || writing_) return;
  if (woff_ == wbuf_.size()) {
    if (out_.empty()) return;
    wbuf_.swap(out_);
    out_.clear();
    woff_ = 0;
  }
  writing_ = true;
  stream_.expires_after(std::chrono::seconds(st_->limits.write_timeout_s));
  stream_.async_write_some(net::buffer(wbuf_.data() + woff_, wbuf_.size() - woff_),
                           on(&connection::on_written));
}

void connection::on_written(error_code ec, std::size_t n) {
  writing_ = false;
  // Only the write timer gives `timeout` (the watch's read may have closed the connection first).
  if (ec == beast::error::timeout) st_->metrics.dropped("write_timeout");
  if (closed_) return;
  if (ec) return close();  // client gone or not reading: cancels the request
  woff_ += n;
  if (woff_ == wbuf_.size()) {
    wbuf_.clear();
    woff_ = 0;
  }
  account();
  if (woff_ < wbuf_.size() || !out_.empty()) return flush();
  if (std::exchange(finishing_, false)) response_done();
}

// The response is fully written: next request, after stopping the disconnect watch.
void connection::response_done() {
  if (!keep_alive_) return drain_on_close_ ? drain({}, 0) : close();
  if (watching_) {  // on_watch continues with read_header
    next_after_watch_ = true;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    return;
  }
  read_header();
}

void connection::watch() {
  if (buffer_.size() >= max_pipelined_bytes) return close();
  watching_ = true;
  stream_.async_read_some(buffer_.prepare(4096), on(&connection::on_watch));
}

void connection::on_watch(error_code ec, std::size_t n) {
  watching_ = false;
  if (closed_) return;
  if (!ec) buffer_.commit(n);  // a pipelined request: parsed after this response
  if (std::exchange(next_after_watch_, false)) {
    if (!ec || ec == net::error::operation_aborted) return read_header();
    return close();
  }
  if (ec) return close();  // EOF or reset: the client left
  watch();
}

// After an error answer to a request whose body was not read (413): half-close and discard what
// the client still sends (up to 1 MiB, 2 s), so that closing does not reset the connection
// before the client has read the answer.
void connection::drain(error_code ec, std::size_t n) {
  if (drained_ == 0) {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(2));
  }
  drained_ += n + 1;
  if (ec || drained_ > (1u << 20)) return close();
  buffer_.clear();
  stream_.async_read_some(buffer_.prepare(4096), on(&connection::drain));
}

void connection::set_idle(bool idle) {
  if (idle)
    st_->idle.add(shared_from_this(), idle_at_);
  else
    st_->idle.remove(idle_at_);
}

bool connection::evict_oldest_idle(http_state& st) {
  auto c = st.idle.take_oldest([](connection & c) -> auto& { return c.idle_at_; });
  if (!c) return false;
  net::dispatch(c->executor(), [c] { c->evict(); });
  return true;
}

// Still waiting for a request, and not a byte of one received or pending: closed. Otherwise a
// request is arriving after all and the connection stays (the new one is let in all the same).
void connection::evict() {
  if (closed_ || reading_body_ || writing_ || buffer_.size() > 0) return;
  beast::error_code ec;
  if (stream_.socket().available(ec) > 0 || ec) return;
  st_->metrics.dropped("evicted");
  close();
}

void connection::close() {
  if (closed_) return;
  closed_ = true;
  set_idle(false);
  if (tick_) tick_->cancel();
  next_ = nullptr;
  on_close();
  out_.clear();  // not wbuf_: a pending write may still point into it
  st_->metrics.buffered(-accounted_);
  accounted_ = 0;
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.close();
}

}  // namespace zf::actors::detail
