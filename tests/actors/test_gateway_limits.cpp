// actors/gateway under hostile clients (issue 9): a slow tokenizer does not hold /health, a
// flood of connections leaves /health and /metrics answering, idle sockets and clients that do
// not read are dropped (their requests cancelled) and counted, HTTP/1.0 streams are not chunked,
// and an over-long prompt is refused before it is tokenized. A real gateway on 127.0.0.1 in front
// of fake_backend, driven over raw loopback sockets.
// clang-format off
#include <utility>  // before Asio under C++20 (TOOLCHAIN.md section 5)
#include <boost/asio.hpp>
// clang-format on

#include <doctest/doctest.h>

#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "actors/fake_backend.hpp"
#include "actors/gateway.hpp"
#include "actors/http_client.hpp"
#include "test_util.hpp"

namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;
using zf::testing::client;
using zf::testing::contains;

namespace {

struct fixture {
  zf::testing::fake_backend backend;
  std::optional<zf::actors::gateway> gw;
  explicit fixture(zf::actors::gateway_options o, int context_length = 256)
      : backend(context_length) {
    o.port = 0;
    gw.emplace(backend, o);
  }
  int port() const { return gw->port(); }
  // A /metrics sample's value read without a connection (which would take a slot), -1 if absent.
  double metric(const std::string& name) const {
    const std::string body = "\n" + gw->metrics_text();
    size_t at = body.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stod(body.substr(at + name.size() + 2));
  }
  double dropped(const std::string& reason) const {
    return metric("zeroflow_http_dropped_connections_total{reason=\"" + reason + "\"}");
  }
  // The count once it reaches `want` (or what it is after 2 s). A timed-out socket is closed by
  // Beast's timer before the connection's handler runs and counts the drop, so a client can see
  // its EOF a moment before the count moves.
  double dropped_eventually(const std::string& reason, double want) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (dropped(reason) != want && std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return dropped(reason);
  }
};

std::string raw_post(const std::string& target, const json& body, const char* version = "1.1") {
  std::string b = body.dump();
  return "POST " + target + " HTTP/" + version +
         "\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(b.size()) + "\r\n\r\n" + b;
}

// A connected raw socket; rcvbuf > 0 shrinks its receive buffer first (a client that reads
// little fills the server's socket sooner).
struct raw_socket {
  net::io_context ioc;
  tcp::socket s{ioc};
  explicit raw_socket(int port, int rcvbuf = 0) {
    s.open(tcp::v4());
    if (rcvbuf > 0) s.set_option(net::socket_base::receive_buffer_size(rcvbuf));
    s.connect({net::ip::make_address("127.0.0.1"), uint16_t(port)});
  }
  void send(const std::string& bytes) { net::write(s, net::buffer(bytes)); }
  // Everything until the server closes, or until `deadline` passes (then nullopt).
  std::optional<std::string> read_to_eof(std::chrono::milliseconds deadline) {
    std::string got;
    char buf[4096];
    const auto end = std::chrono::steady_clock::now() + deadline;
    s.non_blocking(true);
    while (std::chrono::steady_clock::now() < end) {
      boost::system::error_code ec;
      size_t n = s.read_some(net::buffer(buf), ec);
      if (ec == net::error::would_block) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      if (ec) return got;  // EOF or reset: closed
      got.append(buf, n);
    }
    return std::nullopt;
  }
};

// Polls `pred` every 20 ms until it holds or `timeout` passes.
template <class F>
bool eventually(F pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

json stream_request(int max_tokens, int n, int logprobs) {
  return {{"prompt", "a b c d"},
          {"max_tokens", max_tokens},
          {"n", n},
          {"logprobs", logprobs},
          {"stream", true}};
}

}  // namespace

TEST_CASE("gateway: /health answers while a prompt is being tokenized") {
  // One io thread: were tokenizing done on it, /health would wait for the tokenizer.
  fixture f({.io_threads = 1, .prepare_threads = 1});
  f.backend.hold_encode();
  raw_socket slow(f.port());
  slow.send(raw_post("/v1/completions", {{"prompt", "a b"}, {"max_tokens", 2}}));
  REQUIRE(f.backend.wait_encoders(1, 5s));
  auto health = std::async(std::launch::async, [&] { return client(f.port()).get("/health"); });
  const bool answered = health.wait_for(2s) == std::future_status::ready;
  f.backend.release_encode();
  CHECK(answered);
  CHECK(health.get().result_int() == 200);
  auto got = slow.read_to_eof(100ms);  // keep-alive: the answer arrives, the socket stays open
  CHECK(f.backend.wait_idle(5s));
}

TEST_CASE("gateway: with every slot taken, the connection idle longest makes room") {
  fixture f({.max_connections = 2, .overflow_connections = 0});
  raw_socket oldest(f.port());
  REQUIRE(eventually([&] { return f.metric("zeroflow_http_open_connections") == 1; }, 5s));
  raw_socket newer(f.port());
  REQUIRE(eventually([&] { return f.metric("zeroflow_http_open_connections") == 2; }, 5s));
  client c(f.port());  // every slot idle: `oldest` is closed to make room
  CHECK(c.get("/health").result_int() == 200);
  CHECK(oldest.read_to_eof(5s) == std::string());  // closed with no answer: it asked nothing
  CHECK(f.dropped_eventually("evicted", 1) == 1);
  newer.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  auto got = newer.read_to_eof(5s);
  REQUIRE(got);
  CHECK(contains(*got, "HTTP/1.1 200 OK"));
}

TEST_CASE("gateway: with every slot busy, /health and /metrics answer and the rest gets 503") {
  fixture f({.max_connections = 1, .overflow_connections = 1});
  f.backend.token_delay_ms = 20;  // 200 tokens: 4 s, the one slot stays busy
  raw_socket busy(f.port());
  busy.send(raw_post("/v1/completions", {{"prompt", "a"}, {"max_tokens", 200}, {"stream", true}}));
  REQUIRE(eventually([&] { return f.backend.running() == 1; }, 5s));
  auto overflow_is = [&](int n) {
    return eventually([&] { return f.metric("zeroflow_http_overflow_connections") == n; }, 5s);
  };

  client second(f.port());  // an overflow connection: health is answered, then it closes
  auto res = second.get("/health");
  CHECK(res.result_int() == 200);
  CHECK(!res.keep_alive());
  REQUIRE(overflow_is(0));
  client metrics(f.port());
  CHECK(contains(metrics.get("/metrics").body(), "zeroflow_http_overflow_connections 1"));
  metrics.socket.close();
  REQUIRE(overflow_is(0));

  raw_socket third(f.port());  // overflow too: a completion is refused
  third.send(raw_post("/v1/completions", {{"prompt", "a"}, {"max_tokens", 1}}));
  auto got = third.read_to_eof(5s);
  REQUIRE(got);
  CHECK(contains(*got, "HTTP/1.1 503"));
  CHECK(contains(*got, "Retry-After: 1"));
  CHECK(contains(*got, "too many connections"));
  CHECK(f.backend.submitted().size() == 1);
  REQUIRE(overflow_is(0));

  raw_socket idle(f.port());  // holds the overflow slot (busy slots are never evicted)
  REQUIRE(overflow_is(1));
  raw_socket fourth(f.port());  // no slot at all: refused at once
  auto refused = fourth.read_to_eof(5s);
  REQUIRE(refused);
  CHECK(contains(*refused, "HTTP/1.1 503"));
  CHECK(f.dropped_eventually("over_capacity", 1) == 1);
  CHECK(f.dropped("evicted") == 0);
  f.backend.cancel(1);
}

TEST_CASE("gateway: idle and slow-header sockets are closed after header_timeout_s") {
  fixture f({.header_timeout_s = 1});
  raw_socket idle(f.port());
  raw_socket partial(f.port());
  partial.send("GET /health HTTP/1.1\r\nHost: x\r\n");  // never ends its headers
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(idle.read_to_eof(5s) == std::string());
  CHECK(partial.read_to_eof(5s) == std::string());
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  CHECK(f.dropped_eventually("idle_timeout", 1) == 1);
  CHECK(f.dropped_eventually("header_timeout", 1) == 1);
}

TEST_CASE("gateway: a stream whose client does not read is dropped at max_output_bytes") {
  fixture f({.write_timeout_s = 60, .max_output_bytes = 256 << 10}, 1 << 20);
  raw_socket reader(f.port(), 4096);
  reader.send(raw_post("/v1/completions", stream_request(500000, 16, 20)));
  REQUIRE(eventually([&] { return f.backend.last_id() == 1; }, 5s));
  CHECK(f.backend.wait_cancel(1, 30s));
  CHECK(f.backend.wait_idle(5s));
  CHECK(f.dropped_eventually("output_limit", 1) == 1);
  // The dropped connection's buffer is released as its actor ends, after the drop is counted.
  CHECK(eventually([&] { return f.metric("zeroflow_http_buffered_output_bytes") == 0; }, 5s));
}

TEST_CASE("gateway: a write that makes no progress for write_timeout_s drops the client") {
  fixture f({.write_timeout_s = 1, .max_output_bytes = std::size_t{1} << 30}, 1 << 20);
  f.backend.token_delay_ms = 2;  // ~5 MB/s of events: the socket buffers fill in about a second
  raw_socket reader(f.port(), 4096);
  reader.send(raw_post("/v1/completions", stream_request(500000, 16, 20)));
  REQUIRE(eventually([&] { return f.backend.last_id() == 1; }, 5s));
  CHECK(f.backend.wait_cancel(1, 30s));
  CHECK(f.backend.wait_idle(5s));
  CHECK(f.dropped_eventually("write_timeout", 1) == 1);
  CHECK(f.metric("zeroflow_http_buffered_output_bytes") == 0);
}

TEST_CASE("gateway: an HTTP/1.0 stream is sent as it is and ends with the connection") {
  fixture f({});
  raw_socket s(f.port());
  s.send(
      raw_post("/v1/completions", {{"prompt", "x y"}, {"max_tokens", 3}, {"stream", true}}, "1.0"));
  auto got = s.read_to_eof(10s);
  REQUIRE(got);
  const size_t head_end = got->find("\r\n\r\n");
  REQUIRE(head_end != std::string::npos);
  const std::string head = got->substr(0, head_end), body = got->substr(head_end + 4);
  CHECK(contains(head, "HTTP/1.1 200 OK"));
  CHECK(contains(head, "Connection: close"));
  CHECK(!contains(head, "Transfer-Encoding"));
  CHECK(!contains(head, "Content-Length"));
  CHECK(body.rfind("data: {", 0) == 0);  // no chunk-size line before the first event
  CHECK(body.ends_with("data: [DONE]\n\n"));
  CHECK(zf::testing::sse_events(body).size() == 4);  // 3 tokens + [DONE]
}

TEST_CASE("gateway: a prompt over max_prompt_bytes is refused before it is tokenized") {
  fixture f({.max_prompt_bytes = 100});
  client c(f.port());
  auto res = c.post("/v1/completions", {{"prompt", std::string(101, 'a')}, {"max_tokens", 1}});
  CHECK(res.result_int() == 400);
  const json err = json::parse(res.body())["error"];
  CHECK(contains(err["message"].get<std::string>(), "101 bytes"));
  CHECK(contains(err["message"].get<std::string>(), "limit of 100 bytes"));
  CHECK(err["param"] == "prompt");
  CHECK(f.backend.encodes() == 0);
  res = c.post("/v1/chat/completions",
               {{"messages", {{{"role", "user"}, {"content", std::string(200, 'b')}}}}});
  CHECK(res.result_int() == 400);
  CHECK(json::parse(res.body())["error"]["param"] == "messages");
  CHECK(f.backend.encodes() == 0);
  CHECK(c.post("/v1/completions", {{"prompt", std::string(100, 'a')}, {"max_tokens", 1}})
            .result_int() == 200);
}
