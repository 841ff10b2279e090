// OpenAI response rendering: JSON bodies, server-sent-event chunks, logprobs in both formats,
// HTTP chunk framing; request parsing is in openai_request.cpp.
#include "runtime/api/openai.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "runtime/text/text_stream.hpp"

namespace zf::openai {

using json = nlohmann::json;

namespace {

const char* client_finish(serve::finish_reason f) {
  switch (f) {
    case serve::finish_reason::stop:
      return "stop";
    case serve::finish_reason::length:
      return "length";
    case serve::finish_reason::error:
      return "error";
    default:
      return nullptr;  // none; cancelled never reaches a client
  }
}

// Code points in valid UTF-8.
int64_t utf8_chars(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

json byte_array(std::string_view s) {
  json a = json::array();
  for (char c : s) a.push_back(static_cast<unsigned char>(c));
  return a;
}

json empty_logprobs(endpoint kind) {
  if (kind == endpoint::chat) return {{"content", json::array()}};
  return {{"tokens", json::array()},
          {"token_logprobs", json::array()},
          {"top_logprobs", json::array()},
          {"text_offset", json::array()}};
}

// -inf and values far below float precision: the number OpenAI and vLLM use for them.
double clamp_logprob(float x) {
  return std::max(static_cast<double>(x), -9999.0);
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

std::string http_chunk(std::string_view data) {
  if (data.empty()) return {};
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

std::string new_response_id(endpoint kind) {
  thread_local std::mt19937_64 rng{std::random_device{}() ^
                                   (uint64_t(std::random_device{}()) << 32)};
  return fmt::format("{}-{:016x}{:08x}", kind == endpoint::chat ? "chatcmpl" : "cmpl", rng(),
                     uint32_t(rng()));
}

std::string system_fingerprint(uint64_t version) {
  return fmt::format("zf-{}", version);
}

std::string weights_update_body(const serve::weights_result& r) {
  return dump({{"success", true}, {"version", r.version}, {"message", r.message}});
}

api_error weights_update_error(const serve::weights_result& r) {
  return submit_error({0, r.status, 0, r.message});
}

std::string sse(const json& j) {
  return "data: " + dump(j) + "\n\n";
}

response_writer::response_writer(const request& r, std::string model, std::string id,
                                 int64_t created, token_bytes_fn token_bytes)
    : kind_(r.kind),
      stream_(r.stream),
      include_usage_(r.include_usage),
      model_(std::move(model)),
      id_(std::move(id)),
      created_(created),
      prompt_tokens_(static_cast<int>(r.completion.prompt.size())),
      logprobs_(r.completion.sampling.logprobs >= 0),
      token_bytes_(std::move(token_bytes)),
      choices_(r.completion.n) {}

response_writer::response_writer(const request& r, const serve::completion_backend& backend,
                                 std::string id, int64_t created)
    : response_writer(r, backend.model_name(), std::move(id), created,
                      [&backend](int t) { return backend.token_bytes(t); }) {}

std::string response_writer::bytes_of(int token) const {
  return token_bytes_ ? token_bytes_(token) : fmt::format("token_id:{}", token);
}

// Renders one token's log-probabilities onto ch.logprobs, in the endpoint's format.
void response_writer::add_logprobs(choice& ch, const serve::position_logprobs& p) {
  const std::string bytes = bytes_of(p.chosen.token);
  const std::string token = utf8_sanitize(bytes);
  if (kind_ == endpoint::chat) {
    if (ch.logprobs.is_null()) ch.logprobs = empty_logprobs(kind_);
    json top = json::array();
    for (const serve::token_logprob& t : p.top) {
      const std::string b = bytes_of(t.token);
      top.push_back({{"token", utf8_sanitize(b)},
                     {"logprob", clamp_logprob(t.logprob)},
                     {"bytes", byte_array(b)}});
    }
    ch.logprobs["content"].push_back({{"token", token},
                                      {"logprob", clamp_logprob(p.chosen.logprob)},
                                      {"bytes", byte_array(bytes)},
                                      {"top_logprobs", std::move(top)}});
    return;
  }
  if (ch.logprobs.is_null()) ch.logprobs = empty_logprobs(kind_);
  // The chosen token, then the N most likely. Distinct tokens can share a string (U+FFFD for
  // parts of a character): the first keeps the key, so the chosen token's entry is its own.
  json top = {{token, clamp_logprob(p.chosen.logprob)}};
  for (const serve::token_logprob& t : p.top)
    top.emplace(utf8_sanitize(bytes_of(t.token)), clamp_logprob(t.logprob));
  ch.logprobs["tokens"].push_back(token);
  ch.logprobs["token_logprobs"].push_back(clamp_logprob(p.chosen.logprob));
  ch.logprobs["top_logprobs"].push_back(std::move(top));
  ch.logprobs["text_offset"].push_back(ch.chars);
  // Advance over the characters this token completes; an unfinished one waits in partial.
  ch.partial += bytes;
  const std::size_t tail = utf8_incomplete_tail(ch.partial);
  ch.chars +=
      utf8_chars(utf8_sanitize(std::string_view(ch.partial).substr(0, ch.partial.size() - tail)));
  ch.partial.erase(0, ch.partial.size() - tail);
}

json response_writer::chunk(int index, json delta_or_text, const char* finish,
                            json logprobs) const {
  json c = {{"index", index}};
  c[kind_ == endpoint::chat ? "delta" : "text"] = std::move(delta_or_text);
  c["logprobs"] = std::move(logprobs);
  c["finish_reason"] = finish ? json(finish) : json(nullptr);
  json j = {{"id", id_},
            {"object", kind_ == endpoint::chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", model_},
            {"system_fingerprint", system_fingerprint(choices_[index].version)},
            {"choices", json::array({std::move(c)})}};
  if (include_usage_) j["usage"] = nullptr;
  return j;
}

uint64_t response_writer::newest_version() const {
  uint64_t v = 0;
  for (const choice& c : choices_) v = std::max(v, c.version);
  return v;
}

std::string response_writer::on_event(const serve::completion_event& e) {
  if (e.index < 0 || e.index >= static_cast<int>(choices_.size())) return {};
  choice& ch = choices_[e.index];
  if (ch.finish != serve::finish_reason::none) return {};  // nothing after a choice's final
  ch.completion_tokens += static_cast<int>(e.tokens.size());
  if (!e.tokens.empty() || !ch.seen) ch.version = e.weights_version;
  ch.seen = true;
  const bool final = e.finish != serve::finish_reason::none;
  if (final) {
    ch.finish = e.finish;
    ++finished_;
    if (e.prompt_tokens > 0) prompt_tokens_ = e.prompt_tokens;
    if (e.completion_tokens > 0) ch.completion_tokens = e.completion_tokens;
    if (e.finish == serve::finish_reason::cancelled) cancelled_ = true;
  }
  if (logprobs_)
    for (const serve::position_logprobs& p : e.logprobs) add_logprobs(ch, p);
  if (!stream_) {
    ch.text += e.text;
    return {};
  }
  const char* finish = client_finish(e.finish);
  std::string out;
  if (kind_ == endpoint::chat) {
    if (!ch.started) {
      ch.started = true;
      out += sse(chunk(e.index, {{"role", "assistant"}, {"content", ""}}, nullptr));
    }
    // A chunk takes the logprobs of every token not shown yet (std::exchange leaves null).
    if (!e.text.empty())
      out += sse(chunk(e.index, {{"content", e.text}}, nullptr, std::exchange(ch.logprobs, {})));
    if (finish) out += sse(chunk(e.index, json::object(), finish, std::exchange(ch.logprobs, {})));
  } else if (!e.text.empty() || finish) {
    out += sse(chunk(e.index, e.text, finish, std::exchange(ch.logprobs, {})));
  }
  if (e.finish == serve::finish_reason::cancelled)
    out += sse(json::parse(
        make_error(503, "the request was cancelled by the server", "server_error").body()));
  return out;
}

json response_writer::usage() const {
  int completion = 0;
  for (const choice& c : choices_) completion += c.completion_tokens;
  return {{"prompt_tokens", prompt_tokens_},
          {"completion_tokens", completion},
          {"total_tokens", prompt_tokens_ + completion}};
}

std::string response_writer::stream_tail() const {
  std::string out;
  if (include_usage_) {
    json j = {{"id", id_},
              {"object", kind_ == endpoint::chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created_},
              {"model", model_},
              {"system_fingerprint", system_fingerprint(newest_version())},
              {"choices", json::array()},
              {"usage", usage()}};
    out += sse(j);
  }
  return out + "data: [DONE]\n\n";
}

std::string response_writer::body() const {
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const choice& c = choices_[i];
    json o = {{"index", i}};
    if (kind_ == endpoint::chat)
      o["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      o["text"] = c.text;
    o["logprobs"] = !logprobs_             ? json(nullptr)
                    : c.logprobs.is_null() ? empty_logprobs(kind_)
                                           : c.logprobs;
    const char* f = client_finish(c.finish);
    o["finish_reason"] = f ? json(f) : json(nullptr);
    choices.push_back(std::move(o));
  }
  return dump({{"id", id_},
               {"object", kind_ == endpoint::chat ? "chat.completion" : "text_completion"},
               {"created", created_},
               {"model", model_},
               {"system_fingerprint", system_fingerprint(newest_version())},
               {"choices", std::move(choices)},
               {"usage", usage()}});
}

std::string models_body(const serve::completion_backend& backend, int64_t created) {
  json m = {{"id", backend.model_name()},
            {"object", "model"},
            {"created", created},
            {"owned_by", "zeroflow"},
            {"root", backend.model_name()},
            {"parent", nullptr},
            {"max_model_len", backend.context_length()}};
  return dump({{"object", "list"}, {"data", json::array({std::move(m)})}});
}

}  // namespace zf::openai
