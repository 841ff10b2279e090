// runtime/api/openai: request parsing and validation against a backend, and response rendering
// (JSON bodies, SSE chunks), without sockets.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "actors/fake_backend.hpp"
#include "runtime/api/openai.hpp"
#include "test_util.hpp"

using nlohmann::json;
using zf::openai::endpoint;
using zf::serve::finish_reason;
using zf::testing::contains;

namespace {

zf::testing::fake_backend& backend() {
  static zf::testing::fake_backend b(32);  // 32-token context
  return b;
}

zf::openai::request parse_ok(endpoint kind, const json& body) {
  auto r = zf::openai::parse_request(kind, body.dump(), backend());
  if (auto* e = std::get_if<zf::openai::api_error>(&r)) FAIL(e->message);
  return std::get<zf::openai::request>(r);
}

zf::openai::api_error parse_err(endpoint kind, const std::string& body) {
  auto r = zf::openai::parse_request(kind, body, backend());
  REQUIRE(std::holds_alternative<zf::openai::api_error>(r));
  return std::get<zf::openai::api_error>(r);
}

zf::openai::api_error completion_err(json patch) {
  json body = {{"model", "fake-model"}, {"prompt", "a b c"}};
  body.merge_patch(patch);
  return parse_err(endpoint::completions, body.dump());
}

json base_chat() {
  return {{"model", "fake-model"}, {"messages", {{{"role", "user"}, {"content", "hi there"}}}}};
}

zf::serve::completion_event ev(int index, std::string text, finish_reason f = finish_reason::none,
                               int completion_tokens = 0) {
  zf::serve::completion_event e;
  e.index = index;
  e.text = std::move(text);
  e.tokens = {1};
  e.finish = f;
  if (f != finish_reason::none) {
    e.prompt_tokens = 3;
    e.completion_tokens = completion_tokens;
  }
  return e;
}

// The JSON objects of an SSE text; "[DONE]" becomes the string "[DONE]".
std::vector<json> sse_events(const std::string& text) {
  std::vector<json> out;
  size_t pos = 0;
  for (size_t end; (end = text.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    std::string line = text.substr(pos, end - pos);
    REQUIRE(line.rfind("data: ", 0) == 0);
    std::string data = line.substr(6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
  }
  CHECK(pos == text.size());
  return out;
}

}  // namespace

TEST_CASE("openai completions request defaults and prompt forms") {
  auto r = parse_ok(endpoint::completions, {{"model", "fake-model"}, {"prompt", "the cat sat"}});
  CHECK(r.kind == endpoint::completions);
  CHECK(r.completion.prompt == backend().encode("the cat sat"));
  CHECK(r.completion.max_tokens == 16);
  CHECK(r.completion.n == 1);
  CHECK(r.completion.sampling.temperature == 1.0f);
  CHECK(r.completion.sampling.top_p == 1.0f);
  CHECK(r.completion.sampling.top_k == 0);
  CHECK(r.completion.stop.empty());
  CHECK_FALSE(r.stream);

  auto ids = parse_ok(endpoint::completions, {{"model", "fake-model"}, {"prompt", {5, 7, 9}}});
  CHECK(ids.completion.prompt == std::vector<int>{5, 7, 9});
  auto one = parse_ok(endpoint::completions,
                      {{"model", "fake-model"}, {"prompt", {"the cat"}}, {"user", "me"}});
  CHECK(one.completion.prompt == backend().encode("the cat"));

  auto e = completion_err({{"prompt", {"a", "b"}}});
  CHECK(e.status == 400);
  CHECK(contains(e.message, "unsupported: a batch of 2 prompts"));
  e = completion_err({{"prompt", {1, 5000}}});
  CHECK(e.message == "prompt token id 5000 is out of range [0, 1000)");
  e = completion_err({{"prompt", ""}});
  CHECK(e.message == "the prompt must not be empty");
  CHECK(e.param == "prompt");
  e = completion_err({{"prompt", 5}});
  CHECK(e.message == "'prompt' must be a string or an array, got number");
}

TEST_CASE("openai sampling fields stop n and stream options") {
  auto r = parse_ok(endpoint::completions, {{"model", "fake-model"},
                                            {"prompt", "a"},
                                            {"max_tokens", 5},
                                            {"temperature", 0},
                                            {"top_p", 0.5},
                                            {"top_k", 40},
                                            {"seed", 1234},
                                            {"stop", {"x y", "z"}},
                                            {"n", 3},
                                            {"best_of", 3},
                                            {"echo", false},
                                            {"logprobs", nullptr},
                                            {"stream", true},
                                            {"stream_options", {{"include_usage", true}}}});
  CHECK(r.completion.max_tokens == 5);
  CHECK(r.completion.sampling.temperature == 0.0f);
  CHECK(r.completion.sampling.top_p == 0.5f);
  CHECK(r.completion.sampling.top_k == 40);
  CHECK(r.completion.sampling.seed == 1234u);
  CHECK(r.completion.stop == std::vector<std::string>{"x y", "z"});
  CHECK(r.completion.n == 3);
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(parse_ok(endpoint::completions, {{"prompt", "no model: the served one"}}).completion.n ==
        1);
  CHECK(parse_ok(endpoint::completions, {{"model", "fake-model"}, {"prompt", "a"}, {"top_k", -1}})
            .completion.sampling.top_k == 0);
  CHECK(parse_ok(endpoint::completions, {{"model", "fake-model"}, {"prompt", "a"}, {"stop", "q"}})
            .completion.stop == std::vector<std::string>{"q"});
}

TEST_CASE("openai field errors name the field") {
  struct bad {
    json patch;
    std::string param, message;
  };
  const bad cases[] = {
      {{{"temperature", 3}}, "temperature", "'temperature' must be >= 0 and <= 2, got 3"},
      {{{"temperature", "hot"}}, "temperature", "'temperature' must be a number, got string"},
      {{{"top_p", 0}}, "top_p", "'top_p' must be > 0 and <= 1, got 0"},
      {{{"top_k", -2}}, "top_k", "'top_k' must be at least -1, got -2"},
      {{{"n", 0}}, "n", "'n' must be between 1 and 16, got 0"},
      {{{"n", 17}}, "n", "'n' must be between 1 and 16, got 17"},
      {{{"max_tokens", -5}}, "max_tokens", "'max_tokens' must be at least 1, got -5"},
      {{{"max_tokens", 0}}, "max_tokens", "'max_tokens' must be at least 1, got 0"},
      {{{"max_tokens", "ten"}}, "max_tokens", "'max_tokens' must be an integer, got string"},
      {{{"max_tokens", 2.5}}, "max_tokens", "'max_tokens' must be an integer, got number"},
      {{{"seed", "s"}}, "seed", "'seed' must be an integer, got string"},
      {{{"stream", 1}}, "stream", "'stream' must be a boolean, got number"},
      {{{"stop", {"a", "b", "c", "d", "e"}}}, "stop", "'stop' has 5 strings, at most 4"},
      {{{"stop", ""}}, "stop", "'stop' strings must not be empty"},
      {{{"stop", 3}}, "stop", "'stop' must be a string or an array of strings, got number"},
      {{{"stream_options", {{"include_usage", true}}}},
       "stream_options",
       "'stream_options' is only allowed when 'stream' is true"},
      {{{"model", 7}}, "model", "'model' must be a string, got number"},
  };
  for (const bad& b : cases) {
    CAPTURE(b.patch.dump());
    auto e = completion_err(b.patch);
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.param == b.param);
    CHECK(e.message == b.message);
  }
}

TEST_CASE("openai unsupported features are rejected") {
  for (json patch : {json{{"echo", true}}, json{{"echo", true}, {"logprobs", 2}},
                     json{{"best_of", 2}}, json{{"suffix", "end"}}}) {
    CAPTURE(patch.dump());
    auto e = completion_err(patch);
    CHECK(e.status == 400);
    CHECK(e.message.rfind("unsupported: ", 0) == 0);
    CHECK(e.code == "unsupported");
  }
}

TEST_CASE("openai penalties and logit_bias") {
  auto parse = [](endpoint kind, json patch) {
    json body = kind == endpoint::chat ? base_chat() : json{{"prompt", "a b"}};
    body.merge_patch(patch);
    return parse_ok(kind, body).completion.sampling;
  };
  // Defaults: off.
  auto d = parse(endpoint::completions, json::object());
  CHECK(d.presence_penalty == 0.0f);
  CHECK(d.frequency_penalty == 0.0f);
  CHECK(d.repetition_penalty == 1.0f);
  CHECK(d.logit_bias.empty());
  CHECK_FALSE(d.penalized());
  for (endpoint kind : {endpoint::completions, endpoint::chat}) {
    auto s = parse(kind, {{"presence_penalty", 0.5},
                          {"frequency_penalty", -2},
                          {"repetition_penalty", 1.25},
                          {"logit_bias", {{"17", -100}, {"3", 2.5}, {"999", 100}, {"0", 0}}}});
    CHECK(s.presence_penalty == 0.5f);
    CHECK(s.frequency_penalty == -2.0f);
    CHECK(s.repetition_penalty == 1.25f);
    // ids ascending (JSON keys sort as strings: "0" "17" "3" "999")
    CHECK(s.logit_bias ==
          std::vector<std::pair<int, float>>{{0, 0.0f}, {3, 2.5f}, {17, -100.0f}, {999, 100.0f}});
    CHECK(s.penalized());
  }
  CHECK(parse(endpoint::completions, {{"presence_penalty", nullptr}, {"logit_bias", nullptr}})
            .logit_bias.empty());
  CHECK(parse(endpoint::completions, {{"logit_bias", json::object()}}).logit_bias.empty());
  json many = json::object();
  for (int i = 0; i < 300; ++i) many[std::to_string(i)] = 1;
  CHECK(parse(endpoint::completions, {{"logit_bias", many}}).logit_bias.size() == 300);

  struct bad {
    json patch;
    std::string param, message;
  };
  json too_many = many;
  too_many["300"] = 1;
  const bad cases[] = {
      {{{"presence_penalty", 2.5}},
       "presence_penalty",
       "'presence_penalty' must be >= -2 and <= 2, got 2.5"},
      {{{"presence_penalty", "high"}},
       "presence_penalty",
       "'presence_penalty' must be a number, got string"},
      {{{"frequency_penalty", -3}},
       "frequency_penalty",
       "'frequency_penalty' must be >= -2 and <= 2, got -3"},
      {{{"frequency_penalty", true}},
       "frequency_penalty",
       "'frequency_penalty' must be a number, got boolean"},
      {{{"repetition_penalty", 0}},
       "repetition_penalty",
       "'repetition_penalty' must be > 0, got 0"},
      {{{"repetition_penalty", -1.5}},
       "repetition_penalty",
       "'repetition_penalty' must be > 0, got -1.5"},
      {{{"repetition_penalty", "1"}},
       "repetition_penalty",
       "'repetition_penalty' must be a number, got string"},
      {{{"logit_bias", {1, 2}}}, "logit_bias", "'logit_bias' must be an object, got array"},
      {{{"logit_bias", 5}}, "logit_bias", "'logit_bias' must be an object, got number"},
      {{{"logit_bias", {{"abc", 1}}}},
       "logit_bias",
       "'logit_bias' keys must be token ids (decimal integers), got 'abc'"},
      {{{"logit_bias", {{"12 ", 1}}}},
       "logit_bias",
       "'logit_bias' keys must be token ids (decimal integers), got '12 '"},
      {{{"logit_bias", {{"", 1}}}},
       "logit_bias",
       "'logit_bias' keys must be token ids (decimal integers), got ''"},
      {{{"logit_bias", {{"1000", 1}}}},
       "logit_bias",
       "'logit_bias' token id 1000 is out of range [0, 1000)"},
      {{{"logit_bias", {{"-1", 1}}}},
       "logit_bias",
       "'logit_bias' token id -1 is out of range [0, 1000)"},
      {{{"logit_bias", {{"99999999999999999999999", 1}}}},
       "logit_bias",
       "'logit_bias' token id 99999999999999999999999 is out of range [0, 1000)"},
      {{{"logit_bias", {{"5", 101}}}},
       "logit_bias",
       "'logit_bias' value for token 5 must be >= -100 and <= 100, got 101"},
      {{{"logit_bias", {{"5", -100.5}}}},
       "logit_bias",
       "'logit_bias' value for token 5 must be >= -100 and <= 100, got -100.5"},
      {{{"logit_bias", {{"5", "up"}}}},
       "logit_bias",
       "'logit_bias' value for token 5 must be a number, got string"},
      {{{"logit_bias", {{"5", 1}, {"05", 2}}}},
       "logit_bias",
       "'logit_bias' names token 5 more than once"},
      {{{"logit_bias", too_many}}, "logit_bias", "'logit_bias' has 301 entries, at most 300"},
  };
  for (const bad& b : cases) {
    CAPTURE(b.patch.dump());
    auto e = completion_err(b.patch);
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.param == b.param);
    CHECK(e.message == b.message);
    CHECK(e.code.is_null());  // a bad value, no longer "unsupported"
  }
}

TEST_CASE("openai unknown model is 404 model_not_found") {
  auto e = completion_err({{"model", "gpt-4"}});
  CHECK(e.status == 404);
  CHECK(e.message == "The model `gpt-4` does not exist.");
  CHECK(e.code == "model_not_found");
  json body = json::parse(e.body());
  CHECK(body["error"]["message"] == e.message);
  CHECK(body["error"]["type"] == "invalid_request_error");
  CHECK(body["error"]["param"] == "model");
  CHECK(body["error"]["code"] == "model_not_found");
}

TEST_CASE("openai malformed json and non-object bodies") {
  auto e = parse_err(endpoint::completions, R"({"model": "fake-model", "prompt": )");
  CHECK(e.status == 400);
  CHECK(contains(e.message, "Invalid JSON in the request body at byte 35"));
  CHECK(contains(e.message, "parse error"));
  CHECK(json::parse(e.body())["error"]["param"].is_null());
  e = parse_err(endpoint::completions, "[1, 2]");
  CHECK(e.message == "the request body must be a JSON object, got array");
}

TEST_CASE("openai context length is enforced") {
  // 30 prompt tokens + 16 default max_tokens > 32.
  std::string prompt;
  for (int i = 0; i < 30; ++i)
    prompt += fmt::format("w{} ", i);  // (operator+ trips GCC 12 -Wrestrict)
  auto e = completion_err({{"prompt", prompt}});
  CHECK(e.status == 400);
  CHECK(e.message ==
        "This model's maximum context length is 32 tokens. However, you requested 46 tokens (30 "
        "in the prompt, 16 in the completion). Please reduce the length of the prompt or "
        "completion.");
  CHECK(e.code == "context_length_exceeded");
  CHECK(parse_ok(endpoint::completions,
                 {{"model", "fake-model"}, {"prompt", prompt}, {"max_tokens", 2}})
            .completion.max_tokens == 2);
  e = completion_err({{"prompt", prompt}, {"max_tokens", 3}});
  CHECK(contains(e.message, "you requested 33 tokens (30 in the prompt, 3 in the completion)"));
}

TEST_CASE("openai chat request") {
  json body = base_chat();
  body["messages"].push_back({{"role", "assistant"}, {"content", "yo"}});
  auto r = parse_ok(endpoint::chat, body);
  std::vector<int> prompt = backend().encode("user: hi there assistant: yo assistant:");
  CHECK(r.kind == endpoint::chat);
  CHECK(r.completion.prompt == prompt);
  CHECK(r.completion.max_tokens == 32 - static_cast<int>(prompt.size()));  // rest of the context
  body["max_completion_tokens"] = 4;
  CHECK(parse_ok(endpoint::chat, body).completion.max_tokens == 4);
  json mt = base_chat();
  mt["max_tokens"] = 6;
  CHECK(parse_ok(endpoint::chat, mt).completion.max_tokens == 6);
  json parts = base_chat();
  parts["messages"][0]["content"] = {{{"type", "text"}, {"text", "hi there"}}};
  CHECK(parse_ok(endpoint::chat, parts).completion.prompt ==
        backend().encode("user: hi there assistant:"));

  auto chat_err = [](json patch) {
    json b = base_chat();
    b.merge_patch(patch);
    return parse_err(endpoint::chat, b.dump());
  };
  auto e = chat_err({{"messages", json::array()}});
  CHECK(e.message == "'messages' must not be empty");
  e = chat_err({{"messages", {{{"role", "robot"}, {"content", "x"}}}}});
  CHECK(e.message == "'messages[0].role' must be system, user or assistant, got 'robot'");
  CHECK(e.param == "messages[0].role");
  e = chat_err({{"messages", {{{"role", "user"}}}}});
  CHECK(e.message == "'messages[0].content' must be a string");
  e = chat_err({{"messages", nullptr}});
  CHECK(e.message == "'messages' is a required property");
  e = chat_err({{"max_tokens", 40}});
  CHECK(contains(e.message,
                 "in the messages, 40 in the completion). Please reduce the length "
                 "of the messages or completion."));
  e = chat_err({{"max_completion_tokens", -1}});
  CHECK(e.message == "'max_completion_tokens' must be at least 1, got -1");
}

TEST_CASE("openai non-streaming completion and chat bodies") {
  auto r =
      parse_ok(endpoint::completions, {{"model", "fake-model"}, {"prompt", "a b c"}, {"n", 2}});
  zf::openai::response_writer w(r, "fake-model", "cmpl-1", 1700000000);
  CHECK(w.on_event(ev(1, " x")).empty());
  w.on_event(ev(0, " y"));
  w.on_event(ev(0, " z", finish_reason::length, 2));
  CHECK_FALSE(w.done());
  w.on_event(ev(1, "", finish_reason::stop, 1));
  CHECK(w.done());
  json b = json::parse(w.body());
  CHECK(b["id"] == "cmpl-1");
  CHECK(b["object"] == "text_completion");
  CHECK(b["created"] == 1700000000);
  CHECK(b["model"] == "fake-model");
  CHECK(b["choices"][0]["text"] == " y z");
  CHECK(b["choices"][0]["finish_reason"] == "length");
  CHECK(b["choices"][1]["index"] == 1);
  CHECK(b["choices"][1]["text"] == " x");
  CHECK(b["choices"][1]["finish_reason"] == "stop");
  CHECK(b["usage"] == json{{"prompt_tokens", 3}, {"completion_tokens", 3}, {"total_tokens", 6}});

  auto c = parse_ok(endpoint::chat, base_chat());
  zf::openai::response_writer cw(c, "fake-model", "chatcmpl-1", 5);
  cw.on_event(ev(0, "hello", finish_reason::error, 1));
  json cb = json::parse(cw.body());
  CHECK(cb["object"] == "chat.completion");
  CHECK(cb["choices"][0]["message"] == json{{"role", "assistant"}, {"content", "hello"}});
  CHECK(cb["choices"][0]["finish_reason"] == "error");
  CHECK(zf::openai::new_response_id(endpoint::chat).rfind("chatcmpl-", 0) == 0);
  CHECK(zf::openai::new_response_id(endpoint::completions).size() == 5 + 24);
}

TEST_CASE("openai streaming chunks") {
  json body = {{"model", "fake-model"}, {"prompt", "a"}, {"stream", true}};
  auto r = parse_ok(endpoint::completions, body);
  zf::openai::response_writer w(r, "fake-model", "cmpl-2", 9);
  std::string text = w.on_event(ev(0, " one"));  // sequenced: + would not order the calls
  text += w.on_event(ev(0, "", finish_reason::stop, 1));
  CHECK(w.done());
  text += w.stream_tail();
  auto events = sse_events(text);
  REQUIRE(events.size() == 3);
  CHECK(events[0]["object"] == "text_completion");
  CHECK(events[0]["choices"][0]["text"] == " one");
  CHECK(events[0]["choices"][0]["finish_reason"].is_null());
  CHECK_FALSE(events[0].contains("usage"));
  CHECK(events[1]["choices"][0]["finish_reason"] == "stop");
  CHECK(events[2] == "[DONE]");

  // Chat, n = 2, usage: role delta first per choice, then content, then an empty finish delta.
  json cbody = base_chat();
  cbody.merge_patch({{"stream", true}, {"n", 2}, {"stream_options", {{"include_usage", true}}}});
  auto c = parse_ok(endpoint::chat, cbody);
  zf::openai::response_writer cw(c, "fake-model", "chatcmpl-2", 9);
  std::string ct = cw.on_event(ev(1, "B"));
  ct += cw.on_event(ev(0, "A"));
  ct += cw.on_event(ev(0, "", finish_reason::length, 4));
  ct += cw.on_event(ev(1, "b", finish_reason::stop, 2));
  ct += cw.stream_tail();
  auto ce = sse_events(ct);
  REQUIRE(ce.size() == 9);
  CHECK(ce[0]["object"] == "chat.completion.chunk");
  CHECK(ce[0]["choices"][0]["index"] == 1);
  CHECK(ce[0]["choices"][0]["delta"] == json{{"role", "assistant"}, {"content", ""}});
  CHECK(ce[0]["usage"].is_null());
  CHECK(ce[1]["choices"][0]["delta"] == json{{"content", "B"}});
  CHECK(ce[2]["choices"][0]["index"] == 0);
  CHECK(ce[2]["choices"][0]["delta"]["role"] == "assistant");
  CHECK(ce[3]["choices"][0]["delta"] == json{{"content", "A"}});
  CHECK(ce[4]["choices"][0]["delta"] == json::object());
  CHECK(ce[4]["choices"][0]["finish_reason"] == "length");
  CHECK(ce[5]["choices"][0]["delta"] == json{{"content", "b"}});
  CHECK(ce[6]["choices"][0]["finish_reason"] == "stop");
  CHECK(ce[7]["choices"].empty());
  CHECK(ce[7]["usage"] ==
        json{{"prompt_tokens", 3}, {"completion_tokens", 6}, {"total_tokens", 9}});
  CHECK(ce[8] == "[DONE]");
}

TEST_CASE("openai cancelled never reaches the client") {
  auto r =
      parse_ok(endpoint::completions, {{"model", "fake-model"}, {"prompt", "a"}, {"stream", true}});
  zf::openai::response_writer w(r, "fake-model", "cmpl-3", 9);
  std::string text = w.on_event(ev(0, " x"));
  text += w.on_event(ev(0, "", finish_reason::cancelled));
  CHECK(w.done());
  CHECK(w.cancelled());
  CHECK_FALSE(contains(text, "cancelled\""));
  auto events = sse_events(text + w.stream_tail());
  REQUIRE(events.size() == 3);
  CHECK(events[1]["error"]["message"] == "the request was cancelled by the server");
  CHECK(events[2] == "[DONE]");
}

TEST_CASE("openai models list") {
  json m = json::parse(zf::openai::models_body(backend(), 42));
  CHECK(m["object"] == "list");
  REQUIRE(m["data"].size() == 1);
  CHECK(m["data"][0]["id"] == "fake-model");
  CHECK(m["data"][0]["object"] == "model");
  CHECK(m["data"][0]["owned_by"] == "zeroflow");
  CHECK(m["data"][0]["max_model_len"] == 32);
  CHECK(m["data"][0]["created"] == 42);
}

TEST_CASE("openai submit rejections and chunk framing") {
  auto busy = zf::openai::submit_error({0, 429, 3, "busy"});
  CHECK(busy.status == 429);
  CHECK(busy.type == "rate_limit_exceeded");
  CHECK(busy.code == 429);
  CHECK(zf::openai::submit_error({0, 400, 0, "bad"}).type == "invalid_request_error");
  CHECK(zf::openai::submit_error({0, 503, 0, "stopping"}).type == "server_error");
  CHECK(zf::openai::http_chunk("data: x\n\n") == "9\r\ndata: x\n\n\r\n");
  CHECK(zf::openai::http_chunk(std::string(26, 'a')).substr(0, 4) == "1a\r\n");
  CHECK(zf::openai::http_chunk("").empty());
}

namespace {

// An event of one token with its log-probabilities: the chosen token and its top alternatives.
zf::serve::completion_event lp_ev(int index, std::string text, int token, float logprob,
                                  std::vector<zf::serve::token_logprob> top,
                                  finish_reason f = finish_reason::none) {
  zf::serve::completion_event e = ev(index, std::move(text), f, 0);
  e.tokens = {token};
  e.logprobs = {{{token, logprob}, std::move(top)}};
  return e;
}

// Token bytes of the rendering tests: "é" split over two tokens (2: 0xC3, 3: 0xA9).
std::string test_bytes(int id) {
  switch (id) {
    case 1:
      return "H";
    case 2:
      return "\xC3";
    case 3:
      return "\xA9";
    case 4:
      return " x\xE2\x82\xAC";  // " x€"
    default:
      return fmt::format("t{}", id);
  }
}

const std::string fffd = "\xEF\xBF\xBD";

}  // namespace

TEST_CASE("openai logprobs request fields") {
  auto lp = [](endpoint kind, json patch) {
    json body = kind == endpoint::chat ? base_chat() : json{{"prompt", "a b"}};
    body.merge_patch(patch);
    return parse_ok(kind, body).completion.sampling.logprobs;
  };
  CHECK(lp(endpoint::completions, json::object()) == -1);
  CHECK(lp(endpoint::completions, {{"logprobs", nullptr}}) == -1);
  CHECK(lp(endpoint::completions, {{"logprobs", false}}) == -1);
  CHECK(lp(endpoint::completions, {{"logprobs", 0}}) == 0);
  CHECK(lp(endpoint::completions, {{"logprobs", 5}}) == 5);
  CHECK(lp(endpoint::completions, {{"logprobs", 20}}) == 20);
  CHECK(lp(endpoint::chat, json::object()) == -1);
  CHECK(lp(endpoint::chat, {{"logprobs", false}}) == -1);
  CHECK(lp(endpoint::chat, {{"logprobs", true}}) == 0);
  CHECK(lp(endpoint::chat, {{"logprobs", true}, {"top_logprobs", 0}}) == 0);
  CHECK(lp(endpoint::chat, {{"logprobs", true}, {"top_logprobs", 20}}) == 20);
  CHECK(lp(endpoint::chat, {{"logprobs", false}, {"top_logprobs", nullptr}}) == -1);

  struct bad {
    endpoint kind;
    json patch;
    std::string param, message;
  };
  const bad cases[] = {
      {endpoint::completions,
       {{"logprobs", 21}},
       "logprobs",
       "'logprobs' must be between 0 and 20, got 21"},
      {endpoint::completions,
       {{"logprobs", -1}},
       "logprobs",
       "'logprobs' must be between 0 and 20, got -1"},
      {endpoint::completions,
       {{"logprobs", "5"}},
       "logprobs",
       "'logprobs' must be an integer, got string"},
      {endpoint::completions,
       {{"logprobs", true}},
       "logprobs",
       "'logprobs' must be an integer, got boolean"},
      {endpoint::completions,
       {{"logprobs", 1.5}},
       "logprobs",
       "'logprobs' must be an integer, got number"},
      {endpoint::completions,
       {{"top_logprobs", 2}},
       "top_logprobs",
       "'top_logprobs' is a chat completions field; /v1/completions takes the number of "
       "alternatives as 'logprobs'"},
      {endpoint::chat,
       {{"logprobs", true}, {"top_logprobs", 25}},
       "top_logprobs",
       "'top_logprobs' must be between 0 and 20, got 25"},
      {endpoint::chat,
       {{"logprobs", true}, {"top_logprobs", -1}},
       "top_logprobs",
       "'top_logprobs' must be between 0 and 20, got -1"},
      {endpoint::chat,
       {{"logprobs", true}, {"top_logprobs", "3"}},
       "top_logprobs",
       "'top_logprobs' must be an integer, got string"},
      {endpoint::chat,
       {{"top_logprobs", 3}},
       "top_logprobs",
       "'top_logprobs' is only allowed when 'logprobs' is true"},
      {endpoint::chat,
       {{"logprobs", false}, {"top_logprobs", 0}},
       "top_logprobs",
       "'top_logprobs' is only allowed when 'logprobs' is true"},
      {endpoint::chat, {{"logprobs", 5}}, "logprobs", "'logprobs' must be a boolean, got number"},
  };
  for (const bad& b : cases) {
    CAPTURE(b.patch.dump());
    json body = b.kind == endpoint::chat ? base_chat() : json{{"prompt", "a b"}};
    body.merge_patch(b.patch);
    auto e = parse_err(b.kind, body.dump());
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.param == b.param);
    CHECK(e.message == b.message);
  }
}

TEST_CASE("openai logprobs in a completion body: legacy columns, text offsets, raw bytes") {
  auto r = parse_ok(endpoint::completions, {{"prompt", "a b"}, {"logprobs", 2}, {"n", 2}});
  zf::openai::response_writer w(r, "fake-model", "cmpl-lp", 1, test_bytes);
  // Choice 0 spells "Hé x€" in four tokens; "é" is split, so its first token has no text yet.
  w.on_event(lp_ev(0, "H", 1, -0.25f, {{1, -0.25f}, {7, -2.0f}}));
  w.on_event(lp_ev(0, "", 2, -1.5f, {{9, -0.5f}, {2, -1.5f}}));
  // (2 and 3 both read U+FFFD: the chosen token's value keeps the key)
  w.on_event(lp_ev(0, "\xC3\xA9", 3, -3.0f, {{2, -1.0f}, {4, -3.5f}}));
  w.on_event(lp_ev(0, " x\xE2\x82\xAC", 4, -std::numeric_limits<float>::infinity(),
                   {{1, -0.125f}, {9, -0.5f}}, finish_reason::length));
  // Choice 1 finished without a token (logprobs asked: empty columns, not null).
  w.on_event(ev(1, "", finish_reason::stop));
  REQUIRE(w.done());
  json b = json::parse(w.body());
  CHECK(b["choices"][0]["text"] == "H\xC3\xA9 x\xE2\x82\xAC");
  const json& lp = b["choices"][0]["logprobs"];
  CHECK(lp["tokens"] == json{"H", fffd, fffd, " x\xE2\x82\xAC"});
  CHECK(lp["token_logprobs"] == json{-0.25, -1.5, -3.0, -9999.0});
  // The chosen token plus the top 2 (3 keys when the chosen one is not among them).
  CHECK(lp["top_logprobs"][0] == json{{"H", -0.25}, {"t7", -2.0}});
  CHECK(lp["top_logprobs"][1] == json{{"t9", -0.5}, {fffd, -1.5}});
  CHECK(lp["top_logprobs"][2] == json{{fffd, -3.0}, {" x\xE2\x82\xAC", -3.5}});
  CHECK(lp["top_logprobs"][3] == json{{" x\xE2\x82\xAC", -9999.0}, {"H", -0.125}, {"t9", -0.5}});
  // Offsets in characters: "H" 0, both halves of "é" 1, " x€" 2.
  CHECK(lp["text_offset"] == json{0, 1, 1, 2});
  CHECK(b["choices"][1]["logprobs"] == json{{"tokens", json::array()},
                                            {"token_logprobs", json::array()},
                                            {"top_logprobs", json::array()},
                                            {"text_offset", json::array()}});

  // logprobs 0: each position has the chosen token alone; without logprobs, null.
  auto r0 = parse_ok(endpoint::completions, {{"prompt", "a b"}, {"logprobs", 0}});
  zf::openai::response_writer w0(r0, "fake-model", "cmpl-lp0", 1, test_bytes);
  w0.on_event(lp_ev(0, "H", 1, -0.75f, {}, finish_reason::length));
  json b0 = json::parse(w0.body());
  CHECK(b0["choices"][0]["logprobs"]["top_logprobs"] == json::array({{{"H", -0.75}}}));
  auto off = parse_ok(endpoint::completions, {{"prompt", "a b"}});
  zf::openai::response_writer woff(off, "fake-model", "cmpl-off", 1, test_bytes);
  woff.on_event(lp_ev(0, "H", 1, -0.75f, {}, finish_reason::length));
  CHECK(json::parse(woff.body())["choices"][0]["logprobs"].is_null());
}

TEST_CASE("openai logprobs in a chat body: content entries with bytes") {
  json body = base_chat();
  body.merge_patch({{"logprobs", true}, {"top_logprobs", 2}});
  auto r = parse_ok(endpoint::chat, body);
  zf::openai::response_writer w(r, "fake-model", "chatcmpl-lp", 1, test_bytes);
  w.on_event(lp_ev(0, "", 2, -1.5f, {{9, -0.5f}, {2, -1.5f}}));
  w.on_event(lp_ev(0, "\xC3\xA9", 3, -3.0f, {{3, -3.0f}, {4, -3.5f}}, finish_reason::stop));
  json b = json::parse(w.body());
  CHECK(b["choices"][0]["message"]["content"] == "\xC3\xA9");
  const json& content = b["choices"][0]["logprobs"]["content"];
  REQUIRE(content.size() == 2);
  CHECK(content[0] == json{{"token", fffd},
                           {"logprob", -1.5},
                           {"bytes", {0xC3}},
                           {"top_logprobs",
                            {{{"token", "t9"}, {"logprob", -0.5}, {"bytes", {'t', '9'}}},
                             {{"token", fffd}, {"logprob", -1.5}, {"bytes", {0xC3}}}}}});
  CHECK(content[1]["bytes"] == json{0xA9});
  CHECK(content[1]["top_logprobs"][1] == json{{"token", " x\xE2\x82\xAC"},
                                              {"logprob", -3.5},
                                              {"bytes", {' ', 'x', 0xE2, 0x82, 0xAC}}});

  // logprobs without top_logprobs: empty top lists.
  json body0 = base_chat();
  body0["logprobs"] = true;
  zf::openai::response_writer w0(parse_ok(endpoint::chat, body0), "fake-model", "c", 1, test_bytes);
  w0.on_event(lp_ev(0, "H", 1, -0.75f, {}, finish_reason::length));
  CHECK(json::parse(w0.body())["choices"][0]["logprobs"] ==
        json{{"content",
              {{{"token", "H"},
                {"logprob", -0.75},
                {"bytes", {'H'}},
                {"top_logprobs", json::array()}}}}});
}

TEST_CASE("openai streamed logprobs: each chunk carries the tokens not shown before") {
  auto r = parse_ok(endpoint::completions, {{"prompt", "a b"}, {"logprobs", 1}, {"stream", true}});
  zf::openai::response_writer w(r, "fake-model", "cmpl-s", 1, test_bytes);
  std::string text = w.on_event(lp_ev(0, "H", 1, -0.25f, {{1, -0.25f}}));
  text += w.on_event(lp_ev(0, "", 2, -1.5f, {{9, -0.5f}}));  // held back: no chunk
  text += w.on_event(lp_ev(0, "\xC3\xA9", 3, -3.0f, {{3, -3.0f}}));
  text += w.on_event(lp_ev(0, " x\xE2\x82\xAC", 4, -0.5f, {{4, -0.5f}}, finish_reason::length));
  text += w.stream_tail();
  auto events = sse_events(text);
  REQUIRE(events.size() == 4);
  const json& c0 = events[0]["choices"][0];
  CHECK(c0["text"] == "H");
  CHECK(c0["logprobs"]["tokens"] == json{"H"});
  CHECK(c0["logprobs"]["text_offset"] == json{0});
  const json& c1 = events[1]["choices"][0];
  CHECK(c1["text"] == "\xC3\xA9");
  CHECK(c1["logprobs"]["tokens"] == json{fffd, fffd});
  CHECK(c1["logprobs"]["token_logprobs"] == json{-1.5, -3.0});
  CHECK(c1["logprobs"]["top_logprobs"] == json{{{fffd, -1.5}, {"t9", -0.5}}, {{fffd, -3.0}}});
  CHECK(c1["logprobs"]["text_offset"] == json{1, 1});  // offsets run on across chunks
  const json& c2 = events[2]["choices"][0];
  CHECK(c2["finish_reason"] == "length");
  CHECK(c2["logprobs"]["text_offset"] == json{2});
  CHECK(events[3] == "[DONE]");

  // Chat: the role delta has none; the end-of-sequence token (no text) rides on the finish delta.
  json cbody = base_chat();
  cbody.merge_patch({{"logprobs", true}, {"top_logprobs", 1}, {"stream", true}});
  zf::openai::response_writer cw(parse_ok(endpoint::chat, cbody), "fake-model", "c", 1, test_bytes);
  std::string ct = cw.on_event(lp_ev(0, "H", 1, -0.25f, {{1, -0.25f}}));
  ct += cw.on_event(lp_ev(0, "", 5, -0.5f, {{5, -0.5f}}, finish_reason::stop));
  auto ce = sse_events(ct + cw.stream_tail());
  REQUIRE(ce.size() == 4);
  CHECK(ce[0]["choices"][0]["logprobs"].is_null());
  CHECK(ce[1]["choices"][0]["delta"] == json{{"content", "H"}});
  REQUIRE(ce[1]["choices"][0]["logprobs"]["content"].size() == 1);
  CHECK(ce[1]["choices"][0]["logprobs"]["content"][0]["token"] == "H");
  CHECK(ce[2]["choices"][0]["finish_reason"] == "stop");
  REQUIRE(ce[2]["choices"][0]["logprobs"]["content"].size() == 1);
  CHECK(ce[2]["choices"][0]["logprobs"]["content"][0]["token"] == "t5");
  CHECK(ce[2]["choices"][0]["logprobs"]["content"][0]["top_logprobs"] ==
        json{{{"token", "t5"}, {"logprob", -0.5}, {"bytes", {'t', '5'}}}});
}
