// runtime/api/openai_http: one OpenAI request's HTTP answer without sockets: refusals with their
// status codes, chunked SSE bytes of a stream, the one JSON reply otherwise, weight updates.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "actors/fake_backend.hpp"
#include "runtime/api/openai_http.hpp"

using nlohmann::json;
using zf::openai::endpoint;
using zf::openai::http_completion;
using zf::openai::http_reply;
using zf::serve::completion_event;
using zf::serve::finish_reason;

namespace {

// fake_backend runs each request to the ignored sink; the tests feed their own events.
using zf::testing::fake_backend;

const zf::serve::event_sink ignore = [](const completion_event&) {};

std::string header(const http_reply& r, const std::string& name) {
  for (const auto& [n, v] : r.headers)
    if (n == name) return v;
  return "<none>";
}

completion_event event(std::string text, finish_reason f = finish_reason::none) {
  completion_event e;
  e.text = std::move(text);
  e.finish = f;
  if (f != finish_reason::none) {
    e.prompt_tokens = 2;
    e.completion_tokens = 2;
  }
  return e;
}

// Takes one HTTP chunk off the front of `bytes`: its data.
std::string take_chunk(std::string& bytes) {
  const auto eol = bytes.find("\r\n");
  REQUIRE(eol != std::string::npos);
  const std::size_t n = std::stoul(bytes.substr(0, eol), nullptr, 16);
  REQUIRE(bytes.size() >= eol + 2 + n + 2);
  CHECK(bytes.substr(eol + 2 + n, 2) == "\r\n");
  std::string data = bytes.substr(eol + 2, n);
  bytes.erase(0, eol + 2 + n + 2);
  return data;
}

}  // namespace

TEST_CASE("openai_http: bad JSON is refused with 400 and the parser's message") {
  fake_backend b;
  http_completion c(endpoint::completions, R"({"prompt": "a",)", b, ignore);
  REQUIRE(c.refused());
  CHECK(c.refused()->status == 400);
  CHECK_FALSE(c.running());
  const json err = json::parse(c.refused()->body)["error"];
  CHECK(err["type"] == "invalid_request_error");
  CHECK(err["message"].get<std::string>().starts_with("Invalid JSON in the request body at byte"));
  CHECK(b.submitted().empty());  // nothing ran
}

TEST_CASE("openai_http: a number too large for a double is 400, in any field, not 500") {
  fake_backend b;
  for (const char* body :
       {R"({"prompt": "a", "max_tokens": 1e999})", R"({"prompt": "a", "unknown_field": -1e999})"}) {
    CAPTURE(body);
    http_completion c(endpoint::completions, body, b, ignore);
    REQUIRE(c.refused());
    CHECK(c.refused()->status == 400);
    CHECK(json::parse(c.refused()->body)["error"]["message"].get<std::string>().find(
              "Invalid JSON") == 0);
  }
  auto w = zf::openai::weights_update_request(R"({"path": "/m", "version": 1e999})", true);
  REQUIRE(std::holds_alternative<http_reply>(w));
  CHECK(std::get<http_reply>(w).status == 400);
  CHECK(b.submitted().empty());
}

TEST_CASE("openai_http: a full queue is 429 with the backend's Retry-After, at least 1") {
  fake_backend b;
  b.max_active = 0;
  b.retry_after_s = 5;
  http_completion c(endpoint::completions, R"({"prompt": "a b", "max_tokens": 1})", b, ignore);
  REQUIRE(c.refused());
  CHECK(c.refused()->status == 429);
  CHECK(header(*c.refused(), "Retry-After") == "5");
  CHECK(json::parse(c.refused()->body)["error"]["type"] == "rate_limit_exceeded");
  b.retry_after_s = 0;
  http_completion d(endpoint::completions, R"({"prompt": "a b", "max_tokens": 1})", b, ignore);
  CHECK(header(*d.refused(), "Retry-After") == "1");
}

TEST_CASE("openai_http: a stream is a chunked SSE head, one chunk per event, [DONE], last chunk") {
  fake_backend b;
  http_completion c(endpoint::completions,
                    R"({"prompt": "a b", "max_tokens": 2, "stream": true,
                        "stream_options": {"include_usage": true}})",
                    b, ignore);
  REQUIRE_FALSE(c.refused());
  CHECK(c.streaming());
  CHECK(c.running());
  CHECK(c.head().wire(true) ==
        "HTTP/1.1 200 OK\r\nServer: zeroflow\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n");

  auto first = c.on_event(event(" a"));
  CHECK_FALSE(first.reply);
  CHECK_FALSE(first.last);
  std::string data = take_chunk(first.chunks);
  CHECK(first.chunks.empty());
  REQUIRE(data.starts_with("data: "));
  REQUIRE(data.ends_with("\n\n"));
  CHECK(json::parse(data.substr(6))["choices"][0]["text"] == " a");

  CHECK(c.on_event(event("")).chunks.empty());  // nothing to show: no empty chunk

  auto last = c.on_event(event(" b", finish_reason::length));
  CHECK(last.last);
  CHECK_FALSE(last.reply);
  CHECK_FALSE(c.running());
  const json fin = json::parse(take_chunk(last.chunks).substr(6));
  CHECK(fin["choices"][0]["finish_reason"] == "length");
  // The tail is one chunk: the usage event and [DONE]; then the zero-length last chunk.
  const std::string tail = take_chunk(last.chunks);
  REQUIRE(tail.ends_with("\n\ndata: [DONE]\n\n"));
  CHECK(json::parse(tail.substr(6, tail.size() - 6 - 16))["usage"]["total_tokens"] == 4);
  CHECK(last.chunks == "0\r\n\r\n");
}

TEST_CASE("openai_http: without stream, one 200 JSON reply once done, 503 when cancelled") {
  fake_backend b;
  const std::string body = R"({"prompt": "a b", "max_tokens": 2})";
  http_completion c(endpoint::completions, body, b, ignore);
  REQUIRE_FALSE(c.refused());
  CHECK_FALSE(c.streaming());
  CHECK(c.id() == b.last_id());
  auto mid = c.on_event(event(" a"));
  CHECK(mid.chunks.empty());
  CHECK_FALSE(mid.reply);
  auto done = c.on_event(event(" b", finish_reason::stop));
  REQUIRE(done.reply);
  CHECK(done.reply->status == 200);
  CHECK(header(*done.reply, "Content-Type") == "application/json");
  const json j = json::parse(done.reply->body);
  CHECK(j["choices"][0]["text"] == " a b");
  CHECK(j["choices"][0]["finish_reason"] == "stop");

  http_completion d(endpoint::completions, body, b, ignore);
  auto cancelled = d.on_event(event("", finish_reason::cancelled));
  REQUIRE(cancelled.reply);
  CHECK(cancelled.reply->status == 503);
  CHECK(json::parse(cancelled.reply->body)["error"] ==
        json{{"message", "the request was cancelled by the server"},
             {"type", "server_error"},
             {"param", nullptr},
             {"code", nullptr}});
}

TEST_CASE("openai_http: weight updates: 403 when disabled, 400 bad body, the answer") {
  auto off = zf::openai::weights_update_request(R"({"path": "/m"})", false);
  REQUIRE(std::holds_alternative<http_reply>(off));
  const http_reply& forbidden = std::get<http_reply>(off);
  CHECK(forbidden.status == 403);
  CHECK(json::parse(forbidden.body)["error"]["type"] == "permission_error");

  auto bad = zf::openai::weights_update_request(R"({"version": 3})", true);
  REQUIRE(std::holds_alternative<http_reply>(bad));
  CHECK(std::get<http_reply>(bad).status == 400);

  auto ok = zf::openai::weights_update_request(R"({"path": "/m", "version": 3})", true);
  REQUIRE(std::holds_alternative<zf::openai::weights_update>(ok));
  CHECK(std::get<zf::openai::weights_update>(ok).path == "/m");
  CHECK(std::get<zf::openai::weights_update>(ok).version == 3u);

  auto swapped = zf::openai::weights_update_reply({200, 3, "loaded /m"});
  CHECK(swapped.status == 200);
  CHECK(json::parse(swapped.body) ==
        json{{"success", true}, {"version", 3}, {"message", "loaded /m"}});
  auto stale = zf::openai::weights_update_reply({400, 3, "version 3 is not newer"});
  CHECK(stale.status == 400);
  CHECK(json::parse(stale.body)["error"]["message"] == "version 3 is not newer");
}

TEST_CASE("openai_http: models, health and metrics replies") {
  fake_backend b;
  auto models = zf::openai::models_reply(b, 42);
  CHECK(models.status == 200);
  CHECK(json::parse(models.body)["data"][0]["created"] == 42);
  CHECK(zf::openai::health_reply().wire(true).ends_with("\r\n\r\n{\"status\":\"ok\"}"));
  CHECK(header(zf::openai::metrics_reply("x 1\n"), "Content-Type") ==
        "text/plain; version=0.0.4; charset=utf-8");
}
