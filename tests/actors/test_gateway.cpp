// actors/gateway: a real gateway on 127.0.0.1 (ephemeral port) in front of fake_backend, driven
// over loopback by a small blocking Beast client.
// clang-format off
#include <utility>  // before Asio under C++20 (TOOLCHAIN.md section 5)
#include <boost/asio.hpp>
// clang-format on

#include <doctest/doctest.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <thread>

#include "actors/fake_backend.hpp"
#include "actors/gateway.hpp"
#include "actors/http_client.hpp"
#include "test_util.hpp"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;
using zf::testing::client;
using zf::testing::contains;
using zf::testing::response;
using zf::testing::sse_events;

namespace {

// Per choice: the concatenated text (completions) or content deltas (chat) of a stream.
std::map<int, std::string> stream_texts(const std::vector<json>& events, bool chat) {
  std::map<int, std::string> out;
  for (const json& e : events) {
    if (!e.is_object()) continue;
    for (const json& c : e["choices"]) {
      const json& piece = chat ? c["delta"].value("content", json("")) : c["text"];
      out[c["index"].get<int>()] += piece.get<std::string>();
    }
  }
  return out;
}

struct fixture {
  zf::testing::fake_backend backend{256};
  std::optional<zf::actors::gateway> gw;
  explicit fixture(zf::actors::gateway_options o = {}) {
    o.port = 0;
    gw.emplace(backend, o);
  }
  int port() const { return gw->port(); }
  std::vector<int> prompt(const std::string& text) { return backend.encode(text); }
};

json completion(const std::string& prompt, int max_tokens, json extra = json::object()) {
  json b = {{"model", "fake-model"}, {"prompt", prompt}, {"max_tokens", max_tokens}};
  b.merge_patch(extra);
  return b;
}

// Raw socket: sends a request and reads until `want` appears in what came back.
std::string send_and_read_until(tcp::socket& s, const std::string& request,
                                const std::string& want) {
  net::write(s, net::buffer(request));
  std::string got;
  char buf[4096];
  while (got.find(want) == std::string::npos) {
    boost::system::error_code ec;
    size_t n = s.read_some(net::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  return got;
}

std::string raw_post(const std::string& target, const json& body) {
  std::string b = body.dump();
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
}

}  // namespace

TEST_CASE("gateway non-streaming completion and chat") {
  fixture f;
  client c(f.port());
  auto res = c.post("/v1/completions", completion("the cat sat", 5));
  REQUIRE(res.result_int() == 200);
  CHECK(res[http::field::content_type] == "application/json");
  json b = json::parse(res.body());
  CHECK(b["object"] == "text_completion");
  CHECK(b["id"].get<std::string>().rfind("cmpl-", 0) == 0);
  CHECK(b["model"] == "fake-model");
  CHECK(b["choices"][0]["text"] == " the cat sat the cat");
  CHECK(b["choices"][0]["finish_reason"] == "length");
  CHECK(b["usage"] == json{{"prompt_tokens", 3}, {"completion_tokens", 5}, {"total_tokens", 8}});

  // Same connection (keep-alive): chat.
  res = c.post("/v1/chat/completions", {{"model", "fake-model"},
                                        {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                        {"max_tokens", 3}});
  REQUIRE(res.result_int() == 200);
  b = json::parse(res.body());
  CHECK(b["object"] == "chat.completion");
  CHECK(b["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  CHECK(b["choices"][0]["message"] ==
        json{{"role", "assistant"}, {"content", " user: hi assistant:"}});
  CHECK(b["usage"]["prompt_tokens"] == 3);
  CHECK(f.backend.submitted().back().max_tokens == 3);
}

TEST_CASE("gateway streaming completion and chat") {
  fixture f;
  f.backend.token_delay_ms = 2;
  client c(f.port());
  auto res = c.post("/v1/completions",
                    completion("one two three", 7,
                               {{"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  REQUIRE(res.result_int() == 200);
  CHECK(res[http::field::content_type] == "text/event-stream");
  CHECK(res[http::field::cache_control] == "no-cache");
  CHECK(res.chunked());
  auto events = sse_events(res.body());
  REQUIRE(events.size() >= 3);
  CHECK(events.back() == "[DONE]");
  CHECK(stream_texts(events, false)[0] == f.backend.expected(f.prompt("one two three"), 7, 0));
  const json& usage = events[events.size() - 2];
  CHECK(usage["choices"].empty());
  CHECK(usage["usage"] ==
        json{{"prompt_tokens", 3}, {"completion_tokens", 7}, {"total_tokens", 10}});
  CHECK(events[events.size() - 3]["choices"][0]["finish_reason"] == "length");

  res =
      c.post("/v1/chat/completions", {{"model", "fake-model"},
                                      {"messages", {{{"role", "user"}, {"content", "hello you"}}}},
                                      {"max_tokens", 6},
                                      {"stream", true}});
  REQUIRE(res.result_int() == 200);
  events = sse_events(res.body());
  REQUIRE(events.size() >= 4);
  CHECK(events[0]["object"] == "chat.completion.chunk");
  CHECK(events[0]["choices"][0]["delta"]["role"] == "assistant");
  CHECK(events.back() == "[DONE]");
  CHECK(events[events.size() - 2]["choices"][0]["finish_reason"] == "length");
  CHECK(stream_texts(events, true)[0] ==
        f.backend.expected(f.prompt("user: hello you assistant:"), 6, 0));
}

TEST_CASE("gateway n equals 2 and stop strings") {
  fixture f;
  client c(f.port());
  auto res = c.post("/v1/completions", completion("a b", 4, {{"n", 2}}));
  REQUIRE(res.result_int() == 200);
  json b = json::parse(res.body());
  REQUIRE(b["choices"].size() == 2);
  CHECK(b["choices"][0]["text"] == " a b a b");
  CHECK(b["choices"][1]["index"] == 1);
  CHECK(b["choices"][1]["text"] == " a/1 b/1 a/1 b/1");
  CHECK(b["usage"]["completion_tokens"] == 8);

  res = c.post("/v1/completions", completion("a b", 4, {{"n", 2}, {"stream", true}}));
  auto texts = stream_texts(sse_events(res.body()), false);
  CHECK(texts[0] == " a b a b");
  CHECK(texts[1] == " a/1 b/1 a/1 b/1");

  res = c.post("/v1/completions", completion("red green blue", 9, {{"stop", {"blue"}}}));
  b = json::parse(res.body());
  CHECK(f.backend.submitted().back().stop == std::vector<std::string>{"blue"});
  CHECK(b["choices"][0]["text"] == " red green ");
  CHECK(b["choices"][0]["finish_reason"] == "stop");
}

TEST_CASE("gateway request errors are OpenAI error bodies") {
  fixture f;
  client c(f.port());
  auto res =
      c.request(http::verb::post, "/v1/completions", R"({"model": "fake-model", "prompt": )");
  CHECK(res.result_int() == 400);
  json e = json::parse(res.body());
  CHECK(e["error"]["type"] == "invalid_request_error");
  CHECK(contains(e["error"]["message"].get<std::string>(),
                 "Invalid JSON in the request body at byte"));

  std::string long_prompt;
  for (int i = 0; i < 250; ++i) long_prompt += "w ";
  res = c.post("/v1/completions", completion(long_prompt, 10));
  CHECK(res.result_int() == 400);
  CHECK(json::parse(res.body())["error"]["message"] ==
        "This model's maximum context length is 256 tokens. However, you requested 260 tokens "
        "(250 in the prompt, 10 in the completion). Please reduce the length of the prompt or "
        "completion.");

  res = c.post("/v1/completions", completion("a", -3));
  CHECK(res.result_int() == 400);
  CHECK(json::parse(res.body())["error"]["param"] == "max_tokens");

  res = c.post("/v1/completions", {{"model", "gpt-4"}, {"prompt", "a"}});
  CHECK(res.result_int() == 404);
  CHECK(json::parse(res.body())["error"]["code"] == "model_not_found");

  res = c.get("/v2/nothing");
  CHECK(res.result_int() == 404);
  CHECK(json::parse(res.body())["error"]["message"] == "Not found: GET /v2/nothing");

  res = c.get("/v1/completions");
  CHECK(res.result_int() == 405);
  CHECK(res[http::field::allow] == "POST");
  CHECK(f.backend.submitted().empty());  // nothing invalid reached the backend

  fixture small(zf::actors::gateway_options{.max_body_bytes = 4096});
  client big(small.port());
  res = big.request(http::verb::post, "/v1/completions", std::string(10000, ' '));
  CHECK(res.result_int() == 413);
  CHECK(contains(res.body(), "exceeds the limit of 4096 bytes"));
  CHECK_FALSE(res.keep_alive());
}

TEST_CASE("gateway queue full is 429 with Retry-After") {
  fixture f;
  f.backend.max_active = 1;
  f.backend.token_delay_ms = 20;
  net::io_context ioc;
  tcp::socket first(ioc);
  first.connect({net::ip::make_address("127.0.0.1"), uint16_t(f.port())});
  send_and_read_until(first, raw_post("/v1/completions", completion("x", 200, {{"stream", true}})),
                      "data:");
  client c(f.port());
  auto res = c.post("/v1/completions", completion("y", 2));
  CHECK(res.result_int() == 429);
  CHECK(res[http::field::retry_after] == "7");
  json e = json::parse(res.body());
  CHECK(e["error"]["type"] == "rate_limit_exceeded");
  CHECK(e["error"]["code"] == 429);
  CHECK(e["error"]["message"] == "the queue is full");
  first.close();
  CHECK(f.backend.wait_idle(2s));
}

TEST_CASE("gateway client disconnect mid-stream cancels the request") {
  fixture f;
  f.backend.token_delay_ms = 20;  // 200 tokens: 4 s unless cancelled
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect({net::ip::make_address("127.0.0.1"), uint16_t(f.port())});
  std::string got = send_and_read_until(
      s, raw_post("/v1/completions", completion("x y", 200, {{"stream", true}})), "data:");
  CHECK(contains(got, "HTTP/1.1 200 OK"));  // streamed before the end: a step is 20 ms
  uint64_t id = f.backend.last_id();
  auto t0 = std::chrono::steady_clock::now();
  s.close();
  CHECK(f.backend.wait_cancel(id, 1s));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(f.backend.wait_idle(1s));
  client c(f.port());
  auto res = c.post("/v1/completions", completion("still here", 2));
  CHECK(res.result_int() == 200);
  CHECK(json::parse(res.body())["choices"][0]["text"] == " still here");
}

TEST_CASE("gateway client disconnect while waiting for a non-streaming answer cancels") {
  fixture f;
  f.backend.token_delay_ms = 20;
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect({net::ip::make_address("127.0.0.1"), uint16_t(f.port())});
  net::write(s, net::buffer(raw_post("/v1/completions", completion("x", 200))));
  for (int i = 0; i < 100 && f.backend.running() == 0; ++i) std::this_thread::sleep_for(5ms);
  REQUIRE(f.backend.running() == 1);
  uint64_t id = f.backend.last_id();
  s.close();
  CHECK(f.backend.wait_cancel(id, 1s));
  CHECK(f.backend.wait_idle(1s));
}

TEST_CASE("gateway destruction cancels running requests") {
  fixture f;
  f.backend.token_delay_ms = 20;
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect({net::ip::make_address("127.0.0.1"), uint16_t(f.port())});
  send_and_read_until(s, raw_post("/v1/completions", completion("x", 200, {{"stream", true}})),
                      "data:");
  uint64_t id = f.backend.last_id();
  f.gw.reset();
  CHECK(f.backend.wait_cancel(id, 1s));
  CHECK(f.backend.wait_idle(1s));  // the cancelled events reach a closed gate harmlessly
}

TEST_CASE("gateway pipelined requests on one connection") {
  fixture f;
  f.backend.token_delay_ms = 5;
  client c(f.port());
  std::string two = raw_post("/v1/completions", completion("p q", 3, {{"stream", true}})) +
                    raw_post("/v1/completions", completion("r s", 2));
  net::write(c.socket, net::buffer(two));
  auto first = c.read();
  auto second = c.read();
  CHECK(stream_texts(sse_events(first.body()), false)[0] == " p q p");
  CHECK(json::parse(second.body())["choices"][0]["text"] == " r s");
}

TEST_CASE("gateway models health and metrics") {
  fixture f;
  client c(f.port());
  auto res = c.get("/v1/models");
  REQUIRE(res.result_int() == 200);
  json m = json::parse(res.body());
  CHECK(m["data"][0]["id"] == "fake-model");
  CHECK(m["data"][0]["owned_by"] == "zeroflow");
  CHECK(m["data"][0]["max_model_len"] == 256);
  res = c.get("/health");
  CHECK(res.result_int() == 200);
  CHECK(json::parse(res.body())["status"] == "ok");
  c.post("/v1/completions", completion("a", 1));
  c.post("/v1/completions", completion("a", -1));
  res = c.get("/metrics");
  CHECK(res.result_int() == 200);
  CHECK(res[http::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
  const std::string& t = res.body();
  CHECK(contains(t, "zeroflow_fake_requests_total 1\n"));
  CHECK(contains(t, "zeroflow_http_requests_total{route=\"/v1/completions\",code=\"200\"} 1\n"));
  CHECK(contains(t, "zeroflow_http_requests_total{route=\"/v1/completions\",code=\"400\"} 1\n"));
  CHECK(contains(t, "zeroflow_http_requests_total{route=\"/health\",code=\"200\"} 1\n"));
  CHECK(contains(
      t, "# TYPE zeroflow_http_open_connections gauge\nzeroflow_http_open_connections 1\n"));
}

TEST_CASE("gateway cannot listen on a busy port and stop ends wait") {
  fixture f;
  zf::actors::gateway_options o;
  o.port = f.port();
  std::string msg = zf::testing::error_of([&] { zf::actors::gateway g(f.backend, o); });
  CHECK(contains(msg, "gateway: cannot listen on 127.0.0.1:" + std::to_string(f.port()) + ": "));
  std::thread waiter([&] { f.gw->wait(); });
  std::this_thread::sleep_for(20ms);
  f.gw->stop();
  waiter.join();  // returns: a hang here is the failure
  f.gw->stop();   // idempotent
}

TEST_CASE("gateway 100 concurrent streams complete and nothing leaks") {
  fixture f;
  f.backend.token_delay_ms = 1;
  constexpr int clients = 100;
  std::vector<std::string> texts(clients);
  std::vector<int> status(clients, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&, i] {
      try {
        client c(f.port());
        auto res = c.post("/v1/completions",
                          completion("k" + std::to_string(i) + " z", 20, {{"stream", true}}));
        status[i] = res.result_int();
        texts[i] = stream_texts(sse_events(res.body()), false)[0];
      } catch (const std::exception& e) {
        texts[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < clients; ++i) {
    CAPTURE(i);
    CHECK(status[i] == 200);
    CHECK(texts[i] == f.backend.expected(f.prompt("k" + std::to_string(i) + " z"), 20, 0));
  }
  CHECK(f.backend.cancels().empty());
  CHECK(f.backend.wait_idle(1s));
  // Every client has closed: only the metrics connection is left open.
  std::string metrics;
  for (int i = 0; i < 100; ++i) {
    metrics = client(f.port()).get("/metrics").body();
    if (contains(metrics, "zeroflow_http_open_connections 1\n")) break;
    std::this_thread::sleep_for(10ms);
  }
  CHECK(contains(metrics, "zeroflow_http_open_connections 1\n"));
  CHECK(contains(metrics,
                 "zeroflow_http_requests_total{route=\"/v1/completions\",code=\"200\"} 100\n"));
}
