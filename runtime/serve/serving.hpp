#pragma once
// The contract between the HTTP gateway (actors/gateway), load generators (bench/serve), the
// CLI (`zeroflow generate`) and the serving engine (actors/engine): requests in token ids,
// events out as text pieces. Nothing here knows about HTTP or CAF.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/serve/sampling.hpp"
#include "runtime/serve/serve_sample.hpp"
#include "runtime/text/chat_template.hpp"

namespace zf {
struct lm_weights;
}

namespace zf::serve {

struct completion_request {
  std::vector<int> prompt;        // token ids; 1 <= size, size + max_tokens <= context_length()
  int max_tokens = 16;            // >= 1: new tokens per choice at most
  sampling_params sampling;       // temperature 0 = greedy; seed per request (choice i: seed + i)
  std::vector<std::string> stop;  // stop strings; a choice's text ends before the first match
  int n = 1;                      // choices sharing the prompt (their KV blocks are shared)
  bool ignore_eos = false;        // keep going past the end-of-sequence token
};

// OpenAI's cap on top alternatives per position (`logprobs` of completions, `top_logprobs` of
// chat); completion_request.sampling.logprobs is -1 (off) or 0..max_logprobs.
inline constexpr int max_logprobs = 20;
// OpenAI's cap on logit_bias entries (completion_request.sampling.logit_bias).
inline constexpr int max_logit_bias = 300;

// A token id with its log-probability: log_softmax of the model's raw logits over the whole
// vocabulary (before temperature, top-k and top-p, as vLLM reports them by default).
struct token_logprob {
  int token = 0;
  float logprob = 0;
};

// One generated token's log-probabilities: the token itself and the request's `logprobs` most
// likely tokens of its position, most likely first (ties: lower id first). The chosen token may
// or may not be among them.
struct position_logprobs {
  token_logprob chosen;
  std::vector<token_logprob> top;
};

enum class finish_reason { none, stop, length, cancelled, error };
const char* to_string(finish_reason r);  // "stop", "length", "cancelled", "error", ""

// One piece of one choice's output. The text of a choice is the concatenation of its events'
// text; every piece is valid UTF-8 (bytes of a partial character wait for the next token) and
// never contains (a prefix of) a stop string that later matches. Exactly one event per choice
// has finish != none, and it is that choice's last.
struct completion_event {
  uint64_t request_id = 0;
  int index = 0;            // choice index, 0 <= index < n
  std::string text;         // new text (may be empty, e.g. on the final event)
  std::vector<int> tokens;  // new token ids this event covers
  // Parallel to tokens when the request asked for log-probabilities (sampling.logprobs >= 0),
  // else empty. Tokens past a stop string are never generated, so they never appear here.
  std::vector<position_logprobs> logprobs;
  finish_reason finish = finish_reason::none;
  int prompt_tokens = 0;      // usage, set on the final event
  int completion_tokens = 0;  // tokens generated for this choice, set on the final event
  std::string error;          // finish == error: what went wrong
  // The version of the weights whose forward pass produced this event's tokens (0: those the
  // backend started with; see completion_backend::update_weights); an event without tokens
  // carries the version served when it was sent.
  uint64_t weights_version = 0;
};

// Called on the engine's thread, in order per choice. It must not block and must not call back
// into the backend synchronously except cancel().
using event_sink = std::function<void(const completion_event&)>;

// The outcome of a weight update.
struct weights_result {
  int status = 200;      // 200 swapped; 400 refused (another shape, a version not newer than the
                         // served one, a folder that does not load); 501 the backend cannot;
                         // 503 the backend shut down first; 500 anything else
  uint64_t version = 0;  // the version served once the call is over
  std::string message;   // what was loaded, or why not
};
// Called once per update: on the caller's thread when refused at once (another shape, no
// support), else on a backend thread. It must not block.
using weights_done = std::function<void(const weights_result&)>;

struct submit_result {
  uint64_t id = 0;        // valid when status == 200
  int status = 200;       // 200 accepted; 400 invalid request; 429 queue full; 503 shutting down
  int retry_after_s = 0;  // for 429
  std::string message;    // why, when status != 200
};

// Bounds a backend's requests in flight (queued or running). admit() takes a slot or answers
// why not; the sink it returns gives the slot back when the request's last choice ends (before
// passing that event on, so its receiver may submit again at once).
class inflight_limit {
 public:
  explicit inflight_limit(int max) : max_(max) {}
  std::optional<submit_result> admit();  // nullopt: admitted; else the 429 to answer
  event_sink releasing(int choices, event_sink sink);
  int in_flight() const { return n_.load(); }
  std::string metrics_text() const;  // zeroflow_requests_in_flight gauge

 private:
  int max_;
  std::atomic<int> n_{0};
};

class completion_backend {
 public:
  virtual ~completion_backend() = default;
  virtual const std::string& model_name() const = 0;
  virtual int context_length() const = 0;
  virtual int vocab_size() const = 0;
  // Thread-safe tokenization and chat formatting (the model's template).
  virtual std::vector<int> encode(std::string_view text) const = 0;
  virtual std::string chat_prompt(const std::vector<chat_message>& messages) const = 0;
  // Thread-safe. The raw bytes of one token id (may be part of a UTF-8 character), for
  // rendering log-probabilities; an id outside [0, vocab_size()) throws.
  virtual std::string token_bytes(int id) const = 0;
  // Thread-safe. On acceptance the sink will receive the request's events (n final events in
  // all). On rejection the sink is never called.
  virtual submit_result submit(completion_request req, event_sink sink) = 0;
  // Thread-safe, idempotent, unknown ids ignored. The request's KV blocks are freed at the
  // engine's next step boundary; every unfinished choice gets a final event with
  // finish_reason::cancelled.
  virtual void cancel(uint64_t id) = 0;
  // Prometheus text exposition: zeroflow_* gauges, counters and histograms.
  virtual std::string metrics_text() const = 0;
  // Thread-safe. The engine's figures now (counters, gauges, histograms) for a recorder
  // (serve_recorder.hpp); nullopt (the default) when the backend cannot give them (an engine in
  // another process).
  virtual std::optional<engine_snapshot> snapshot() const { return std::nullopt; }
  // Thread-safe. Called after each engine step that did work, on the engine's thread, with the
  // step's start and end (the console's timeline: serve records them as spans). Null: none. False
  // (the default): this backend cannot (an engine in another process).
  using step_observer = std::function<void(std::chrono::steady_clock::time_point t0,
                                           std::chrono::steady_clock::time_point t1)>;
  virtual bool observe_steps(step_observer) { return false; }
  // Thread-safe. Non-empty once the backend is gone for good (an engine process that died), with
  // why: every later request is refused with it. "" while it serves.
  virtual std::string failure() const { return ""; }

  // ---- weights that change while serving (RLHF weight sync). Every default answers 501.
  // Thread-safe. The version served now: 0 for the weights the backend started with.
  virtual uint64_t weights_version() const { return 0; }
  // Thread-safe, asynchronous: serves `weights` as `version` (nullopt: the served version + 1;
  // else it must be newer) from the next engine step on; done runs once the swap happened, or
  // with why not (weights of another shape, a stale version), and then the old weights serve on.
  virtual void update_weights_async(std::shared_ptr<const lm_weights> weights,
                                    std::optional<uint64_t> version, weights_done done);
  // The same for a model folder on the server's disk (a zeroflow checkpoint or a Hugging Face
  // folder, storage/lm_loader.hpp), loaded off the engine's thread.
  virtual void update_weights_from_disk(std::string path, std::optional<uint64_t> version,
                                        weights_done done);
  // Blocking update_weights_async: returns the version served once the swap happened; throws
  // zf::error with the reason when it was refused. Never from a sink (the engine's thread).
  uint64_t update_weights(uint64_t version, std::shared_ptr<const lm_weights> weights);
};

}  // namespace zf::serve
