#pragma once
// The OpenAI-compatible wire format of POST /v1/completions and POST /v1/chat/completions,
// without sockets: request bodies (JSON text) in, a validated serve::completion_request out;
// serve::completion_events in, response JSON or Server-Sent-Events text out. actors/gateway owns
// the HTTP side and calls these on its connection strands (everything here is thread-compatible).
//
// Errors are OpenAI error objects: an HTTP status plus
//   {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
//              "code": null}}
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/serve/serving.hpp"

namespace zf::openai {

enum class endpoint { completions, chat };

struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;              // empty: null
  nlohmann::json code = nullptr;  // a string ("model_not_found"), a number (429) or null
  std::string body() const;       // the JSON error object above
};

api_error bad_request(std::string message, std::string param = {}, nlohmann::json code = nullptr);
api_error make_error(int status, std::string message, std::string type = "invalid_request_error",
                     nlohmann::json code = nullptr);
// The error a rejected submit (status != 200) answers with: 429 rate_limit_exceeded (code 429),
// 400 invalid_request_error, anything else server_error.
api_error submit_error(const serve::submit_result& r);
// One HTTP/1.1 chunk of a chunked body ("<hex size>\r\n<data>\r\n"); empty data gives "" (an
// empty chunk would end the body).
std::string http_chunk(std::string_view data);

// A request that passed validation against the backend (model, context length, vocabulary).
struct request {
  endpoint kind = endpoint::completions;
  serve::completion_request completion;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a final chunk carries usage
};

// Parses and validates a body. Completions take `prompt` as a string, an array of token ids or a
// one-element array of strings; chat takes `messages` [{role, content}] formatted by
// backend.chat_prompt. Log-probabilities: completions `logprobs` N (0..20; null or false: off),
// chat `logprobs` true with `top_logprobs` N (0..20, default 0; only with logprobs true); both
// become completion.sampling.logprobs = N (-1: off). Penalties: `presence_penalty` and
// `frequency_penalty` in [-2, 2] (OpenAI), `repetition_penalty` > 0 (vLLM), `logit_bias`
// {"<token id>": bias in [-100, 100]} with at most 300 ids in the vocabulary (OpenAI); see
// sampling_params. Unsupported features (echo, best_of != n, suffix) give 400; a model other
// than backend.model_name() gives 404 model_not_found.
// A prompt text (completions) or rendered chat prompt longer than max_prompt_bytes is refused
// with 400 before it is tokenized: tokenizing costs time on the server that the client does not
// pay for, and no prompt that long fits a context anyway.
inline constexpr std::size_t default_max_prompt_bytes = 256 * 1024;
std::variant<request, api_error> parse_request(
    endpoint kind, std::string_view body, const serve::completion_backend& backend,
    std::size_t max_prompt_bytes = default_max_prompt_bytes);

// POST /v1/update_weights_from_disk (SGLang's endpoint): {"path": "<model folder on the
// server>"} ("model_path", SGLang's spelling, is accepted too) and an optional "version" (a
// non-negative integer; absent: the served version + 1).
struct weights_update {
  std::string path;
  std::optional<uint64_t> version;
};
std::variant<weights_update, api_error> parse_weights_update(std::string_view body);
// Its answer once the backend is done: status 200 with {"success": true, "version": N,
// "message": "..."}, else the error (400 invalid_request_error, others server_error).
std::string weights_update_body(const serve::weights_result& r);
api_error weights_update_error(const serve::weights_result& r);

// "zf-<version>": the system_fingerprint of what weights `version` produced (responses and
// chunks carry it; see response_writer).
std::string system_fingerprint(uint64_t version);

// "cmpl-<24 hex>" or "chatcmpl-<24 hex>", random.
std::string new_response_id(endpoint kind);

// Turns one request's events into what the client receives. Streaming: on_event returns the SSE
// chunks ("data: {...}\n\n") the event adds; chat choices get a {"role":"assistant"} delta
// first, then {"content"} deltas, then an empty delta carrying finish_reason. Non-streaming:
// on_event collects text per choice and body() renders the whole object once done().
// finish_reason "cancelled" is never shown: a request the server cancelled (shutdown) becomes an
// error (stream: an error event; otherwise the gateway answers 503).
//
// Log-probabilities (request.completion.sampling.logprobs = N >= 0), from the events' logprobs,
// token strings being the token's bytes with invalid UTF-8 replaced by U+FFFD:
//   completions: "logprobs": {"tokens": [str], "token_logprobs": [x], "top_logprobs":
//     [{str: x}: the chosen token and the N most likely, as vLLM; where two share a string,
//     the chosen or more likely one's value], "text_offset": [characters (code points) of the
//     choice's text before the token; a token that starts inside a character gets that
//     character's offset]}
//   chat: "logprobs": {"content": [{"token", "logprob", "bytes": [raw bytes], "top_logprobs":
//     [the N most likely {"token", "logprob", "bytes"}]}]}
// A streamed chunk carries the tokens not yet shown (text held back for a stop string or an
// unfinished character carries its tokens to the next chunk); a chunk with none has null.
// Values below -9999 (far under float precision) are clamped to -9999, as vLLM and OpenAI do.
//
// system_fingerprint (every chunk and body): the version of the weights whose forward produced
// the choice's last token so far (events' weights_version); a body or usage chunk of n > 1
// choices names the newest of its choices' versions (versions only grow).
class response_writer {
 public:
  // Raw bytes of a token id. Without one, tokens are named "token_id:<id>" (vLLM's spelling).
  using token_bytes_fn = std::function<std::string(int)>;
  response_writer(const request& r, std::string model, std::string id, int64_t created,
                  token_bytes_fn token_bytes = {});
  // The backend's model name and token bytes; backend must outlive the writer.
  response_writer(const request& r, const serve::completion_backend& backend, std::string id,
                  int64_t created);

  std::string on_event(const serve::completion_event& e);
  bool done() const { return finished_ == static_cast<int>(choices_.size()); }
  bool cancelled() const { return cancelled_; }
  // Streaming, once done(): the usage chunk (if include_usage) and "data: [DONE]\n\n".
  std::string stream_tail() const;
  // Non-streaming, once done(): the text_completion / chat.completion object.
  std::string body() const;

 private:
  struct choice {
    std::string text;
    bool started = false;  // chat stream: role delta sent
    int completion_tokens = 0;
    uint64_t version = 0;  // weights version of the last token (or of the first event)
    bool seen = false;     // an event arrived
    serve::finish_reason finish = serve::finish_reason::none;
    // Rendered logprobs of the tokens not yet sent (non-streaming: all), in the endpoint's
    // format; null while there are none.
    nlohmann::json logprobs;
    // completions text_offset: characters of the tokens so far, and the bytes of a character
    // they left unfinished
    int64_t chars = 0;
    std::string partial;
  };
  nlohmann::json chunk(int index, nlohmann::json delta_or_text, const char* finish,
                       nlohmann::json logprobs = nullptr) const;
  uint64_t newest_version() const;
  nlohmann::json usage() const;
  void add_logprobs(choice& ch, const serve::position_logprobs& p);
  std::string bytes_of(int token) const;

  endpoint kind_;
  bool stream_, include_usage_;
  std::string model_, id_;
  int64_t created_;
  int prompt_tokens_;
  bool logprobs_;  // the request asked for them
  token_bytes_fn token_bytes_;
  std::vector<choice> choices_;
  int finished_ = 0;
  bool cancelled_ = false;
};

// GET /v1/models: the OpenAI list with the backend's one model.
std::string models_body(const serve::completion_backend& backend, int64_t created);

// SSE framing of one JSON value: "data: <json>\n\n".
std::string sse(const nlohmann::json& j);

}  // namespace zf::openai
