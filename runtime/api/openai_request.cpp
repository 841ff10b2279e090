// OpenAI request parsing and validation (the JSON side of zf::serve::completion_request) and
// the error bodies; rendering of responses is in openai.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include "runtime/api/openai.hpp"

namespace zf::openai {

using json = nlohmann::json;

namespace {

// Validation failures unwind to parse_request as an api_error exception.
[[noreturn]] void reject(std::string message, std::string param = {}, json code = nullptr) {
  throw bad_request(std::move(message), std::move(param), std::move(code));
}

// A field that is absent or null counts as not given.
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void wrong_type(const char* key, const char* want, const json& got) {
  reject(fmt::format("'{}' must be {}, got {}", key, want, got.type_name()), key);
}

double number(const json& body, const char* key, double fallback, double lo, double hi,
              bool lo_open = false) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  double x = v->get<double>();
  if (!std::isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
    reject(
        fmt::format("'{}' must be {} {} and <= {}, got {}", key, lo_open ? ">" : ">=", lo, hi, x),
        key);
  return x;
}

int64_t integer(const json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number_integer()) wrong_type(key, "an integer", *v);
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi))
    reject(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v->dump()), key);
  int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    if (hi == std::numeric_limits<int>::max())
      reject(fmt::format("'{}' must be at least {}, got {}", key, lo, x), key);
    reject(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, x), key);
  }
  return x;
}

bool boolean(const json& body, const char* key, bool fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

// repetition_penalty (vLLM): any finite number > 0; 1 is off.
double positive(const json& body, const char* key, double fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x <= 0) reject(fmt::format("'{}' must be > 0, got {}", key, x), key);
  return x;
}

// logit_bias: {"<token id>": bias in [-100, 100]} (JSON keys are strings) into (id, bias)
// pairs, ids ascending; at most serve::max_logit_bias entries, each id once.
std::vector<std::pair<int, float>> logit_bias(const json& body, int vocab) {
  const char* key = "logit_bias";
  const json* lb = field(body, key);
  if (!lb) return {};
  if (!lb->is_object()) wrong_type(key, "an object", *lb);
  if (lb->size() > static_cast<std::size_t>(serve::max_logit_bias))
    reject(
        fmt::format("'logit_bias' has {} entries, at most {}", lb->size(), serve::max_logit_bias),
        key);
  std::vector<std::pair<int, float>> out;
  out.reserve(lb->size());
  for (const auto& [name, value] : lb->items()) {
    int64_t id = 0;
    const char* end = name.data() + name.size();
    const auto [stop, ec] = std::from_chars(name.data(), end, id);
    if (name.empty() || stop != end || (ec != std::errc{} && ec != std::errc::result_out_of_range))
      reject(fmt::format("'logit_bias' keys must be token ids (decimal integers), got '{}'", name),
             key);
    if (ec == std::errc::result_out_of_range || id < 0 || id >= vocab)
      reject(fmt::format("'logit_bias' token id {} is out of range [0, {})", name, vocab), key);
    if (!value.is_number())
      reject(fmt::format("'logit_bias' value for token {} must be a number, got {}", id,
                         value.type_name()),
             key);
    const double b = value.get<double>();
    if (!std::isfinite(b) || b < -100 || b > 100)
      reject(
          fmt::format("'logit_bias' value for token {} must be >= -100 and <= 100, got {}", id, b),
          key);
    out.emplace_back(static_cast<int>(id), static_cast<float>(b));
  }
  std::sort(out.begin(), out.end());
  for (std::size_t i = 1; i < out.size(); ++i)  // "5" and "05"
    if (out[i].first == out[i - 1].first)
      reject(fmt::format("'logit_bias' names token {} more than once", out[i].first), key);
  return out;
}

[[noreturn]] void unsupported(const std::string& what, const char* param) {
  reject(fmt::format("unsupported: {} is not supported by this server", what), param,
         "unsupported");
}

// backend.encode(text), unless text is over the byte limit: then 400 naming the limit.
std::vector<int> encode_within(const serve::completion_backend& backend, std::string_view text,
                               std::size_t limit, const char* param) {
  if (text.size() > limit)
    reject(fmt::format("the {} is {} bytes, more than this server's limit of {} bytes "
                       "(server.max_prompt_bytes)",
                       param, text.size(), limit),
           param);
  return backend.encode(text);
}

std::vector<int> prompt_tokens(const json& body, const serve::completion_backend& backend,
                               std::size_t limit) {
  const json* p = field(body, "prompt");
  if (!p) reject("'prompt' is a required property", "prompt");
  if (p->is_string())
    return encode_within(backend, p->get_ref<const std::string&>(), limit, "prompt");
  if (!p->is_array()) wrong_type("prompt", "a string or an array", *p);
  if (p->empty()) reject("'prompt' must not be empty", "prompt");
  if ((*p)[0].is_string()) {
    if (p->size() != 1)
      unsupported(fmt::format("a batch of {} prompts (send one request per prompt)", p->size()),
                  "prompt");
    return encode_within(backend, (*p)[0].get_ref<const std::string&>(), limit, "prompt");
  }
  std::vector<int> ids;
  ids.reserve(p->size());
  for (const json& t : *p) {
    if (!t.is_number_integer())
      reject(fmt::format("'prompt' must be a string, an array of token ids or an array of one "
                         "string; found an element of type {}",
                         t.type_name()),
             "prompt");
    int64_t id = t.get<int64_t>();
    if (id < 0 || id >= backend.vocab_size())
      reject(fmt::format("prompt token id {} is out of range [0, {})", id, backend.vocab_size()),
             "prompt");
    ids.push_back(static_cast<int>(id));
  }
  return ids;
}

std::vector<serve::chat_message> messages(const json& body) {
  const json* m = field(body, "messages");
  if (!m) reject("'messages' is a required property", "messages");
  if (!m->is_array()) wrong_type("messages", "an array", *m);
  if (m->empty()) reject("'messages' must not be empty", "messages");
  std::vector<serve::chat_message> out;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    std::string where = fmt::format("messages[{}]", i);
    if (!msg.is_object()) reject(fmt::format("'{}' must be an object", where), where);
    const json* role = field(msg, "role");
    if (!role || !role->is_string())
      reject(fmt::format("'{}.role' must be a string", where), where + ".role");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant")
      reject(fmt::format("'{}.role' must be system, user or assistant, got '{}'", where, r),
             where + ".role");
    const json* content = field(msg, "content");
    std::string text;
    if (content && content->is_string()) {
      text = content->get<std::string>();
    } else if (content && content->is_array()) {  // [{"type":"text","text":...}] parts
      for (const json& part : *content) {
        const json* t = part.is_object() ? field(part, "text") : nullptr;
        if (!t || !t->is_string() || part.value("type", "text") != "text")
          unsupported(fmt::format("a non-text content part in {}", where), "messages");
        text += t->get<std::string>();
      }
    } else {
      reject(fmt::format("'{}.content' must be a string", where), where + ".content");
    }
    out.push_back({std::move(r), std::move(text)});
  }
  return out;
}

std::vector<std::string> stop_strings(const json& body) {
  const json* s = field(body, "stop");
  if (!s) return {};
  std::vector<std::string> out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    if (s->size() > 4) reject(fmt::format("'stop' has {} strings, at most 4", s->size()), "stop");
    for (const json& x : *s) {
      if (!x.is_string()) wrong_type("stop", "a string or an array of strings", x);
      out.push_back(x.get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or an array of strings", *s);
  }
  for (const std::string& x : out)
    if (x.empty()) reject("'stop' strings must not be empty", "stop");
  return out;
}

// -1 (off) or the number of most likely alternatives to report per token.
int logprobs_count(bool chat, const json& body) {
  const json* lp = field(body, "logprobs");
  if (!chat) {  // legacy completions: logprobs N; false (which we always accepted) is off
    if (field(body, "top_logprobs"))
      reject(
          "'top_logprobs' is a chat completions field; /v1/completions takes the number of "
          "alternatives as 'logprobs'",
          "top_logprobs");
    if (!lp || (lp->is_boolean() && !lp->get<bool>())) return -1;
    return static_cast<int>(integer(body, "logprobs", -1, 0, serve::max_logprobs));
  }
  const bool on = boolean(body, "logprobs", false);
  const int top = static_cast<int>(integer(body, "top_logprobs", -1, 0, serve::max_logprobs));
  if (top >= 0 && !on)
    reject("'top_logprobs' is only allowed when 'logprobs' is true", "top_logprobs");
  return on ? std::max(top, 0) : -1;
}

request parse_object(endpoint kind, const json& body, const serve::completion_backend& backend,
                     std::size_t max_prompt_bytes) {
  if (!body.is_object())
    reject(fmt::format("the request body must be a JSON object, got {}", body.type_name()));
  // No model: the one served (as vLLM does); a named model must be it.
  const json* model = field(body, "model");
  if (model && !model->is_string()) wrong_type("model", "a string", *model);
  if (model && model->get<std::string>() != backend.model_name()) {
    api_error e =
        bad_request(fmt::format("The model `{}` does not exist.", model->get<std::string>()),
                    "model", "model_not_found");
    e.status = 404;
    throw e;
  }

  request r;
  r.kind = kind;
  serve::completion_request& c = r.completion;
  const bool chat = kind == endpoint::chat;
  // Unsupported OpenAI features: rejected rather than silently ignored.
  if (boolean(body, "echo", false)) unsupported("echo=true", "echo");
  if (field(body, "suffix")) unsupported("suffix", "suffix");
  if (field(body, "tools") || field(body, "functions")) unsupported("tool calls", "tools");

  c.n = static_cast<int>(integer(body, "n", 1, 1, 16));
  if (!chat && integer(body, "best_of", c.n, 1, 16) != c.n)
    unsupported("best_of different from n", "best_of");
  c.sampling.temperature = static_cast<float>(number(body, "temperature", 1, 0, 2));
  c.sampling.top_p = static_cast<float>(number(body, "top_p", 1, 0, 1, true));
  int64_t top_k = integer(body, "top_k", -1, -1, std::numeric_limits<int>::max());
  c.sampling.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);  // -1 (vLLM) and 0: off
  // Penalties and logit_bias reshape the logits before temperature/top-k/top-p and greedy (see
  // sampling_params); logprobs stay the raw model's.
  c.sampling.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0, -2, 2));
  c.sampling.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0, -2, 2));
  c.sampling.repetition_penalty = static_cast<float>(positive(body, "repetition_penalty", 1));
  c.sampling.logit_bias = logit_bias(body, backend.vocab_size());
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) wrong_type("seed", "an integer", *seed);
    c.sampling.seed = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                                 : static_cast<uint64_t>(seed->get<int64_t>());
  } else {
    c.sampling.seed = std::random_device{}() * 0x9E3779B97F4A7C15ull + std::random_device{}();
  }
  c.sampling.logprobs = logprobs_count(chat, body);
  c.stop = stop_strings(body);
  c.ignore_eos = boolean(body, "ignore_eos", false);
  r.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!r.stream)
      reject("'stream_options' is only allowed when 'stream' is true", "stream_options");
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    r.include_usage = boolean(*so, "include_usage", false);
  }

  c.prompt = chat ? encode_within(backend, backend.chat_prompt(messages(body)), max_prompt_bytes,
                                  "messages")
                  : prompt_tokens(body, backend, max_prompt_bytes);
  const char* prompt_word = chat ? "messages" : "prompt";
  if (c.prompt.empty()) reject(fmt::format("the {} must not be empty", prompt_word), prompt_word);
  const int ctx = backend.context_length();
  const int64_t prompt_len = static_cast<int64_t>(c.prompt.size());
  // Chat defaults to the rest of the context (at least 1, so an over-long prompt still fails
  // below with the context-length message); completions default to 16 like OpenAI.
  const char* max_key =
      chat && field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  int64_t fallback = chat ? std::max<int64_t>(1, ctx - prompt_len) : 16;
  int64_t max_tokens = integer(body, max_key, fallback, 1, std::numeric_limits<int>::max());
  if (prompt_len + max_tokens > ctx)
    reject(
        fmt::format("This model's maximum context length is {} tokens. However, you requested "
                    "{} tokens ({} in the {}, {} in the completion). Please reduce the length "
                    "of the {} or completion.",
                    ctx, prompt_len + max_tokens, prompt_len, prompt_word, max_tokens, prompt_word),
        prompt_word, "context_length_exceeded");
  c.max_tokens = static_cast<int>(max_tokens);
  return r;
}

}  // namespace

std::string api_error::body() const {
  json e = {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code}};
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

api_error bad_request(std::string message, std::string param, json code) {
  api_error e;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

api_error make_error(int status, std::string message, std::string type, json code) {
  api_error e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

api_error submit_error(const serve::submit_result& r) {
  if (r.status == 429) return make_error(429, r.message, "rate_limit_exceeded", 429);
  if (r.status == 400) return make_error(400, r.message);
  return make_error(r.status, r.message, "server_error");
}

namespace {

// The body as JSON, or an api_error thrown.
json parse_body(std::string_view body) {
  try {
    return json::parse(body);
  } catch (const json::parse_error& e) {
    throw bad_request(
        fmt::format("Invalid JSON in the request body at byte {}: {}", e.byte, e.what()));
  } catch (const json::exception& e) {  // a number too large for a double (1e999), ...
    throw bad_request(fmt::format("Invalid JSON in the request body: {}", e.what()));
  }
}

}  // namespace

std::variant<weights_update, api_error> parse_weights_update(std::string_view body) {
  try {
    const json j = parse_body(body);
    if (!j.is_object())
      reject(fmt::format("the request body must be a JSON object, got {}", j.type_name()));
    const char* key = field(j, "path") || !field(j, "model_path") ? "path" : "model_path";
    const json* p = field(j, key);
    if (!p) reject("'path' is required: the model folder to load", "path");
    if (!p->is_string()) wrong_type(key, "a string", *p);
    weights_update u;
    u.path = p->get<std::string>();
    if (u.path.empty()) reject(fmt::format("'{}' must not be empty", key), key);
    if (const json* v = field(j, "version")) {
      if (!v->is_number_integer() || (!v->is_number_unsigned() && v->get<int64_t>() < 0))
        reject(fmt::format("'version' must be a non-negative integer, got {}", v->dump()),
               "version");
      u.version = v->get<uint64_t>();
    }
    return u;
  } catch (const api_error& e) {
    return e;
  }
}

std::variant<request, api_error> parse_request(endpoint kind, std::string_view body,
                                               const serve::completion_backend& backend,
                                               std::size_t max_prompt_bytes) {
  try {
    return parse_object(kind, parse_body(body), backend, max_prompt_bytes);
  } catch (const api_error& e) {
    return e;
  } catch (const json::exception& e) {  // e.g. a content part's "type" that is not a string
    return bad_request(fmt::format("invalid request: {}", e.what()));
  }
}

}  // namespace zf::openai
