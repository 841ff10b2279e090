// libFuzzer target: bytes off a socket -> the gateway's request parser (actors/http_parse:
// Boost.Beast, 1 MiB body limit) -> route_request -> the route's handler as actors/gateway_session
// runs it: POST completions / chat through http_completion (parse_request, submit to a fake
// backend, then a fake engine's events rendered as JSON or SSE chunks), update_weights_from_disk
// through weights_update_request, the GET routes' replies. Several requests in one input are
// handled in turn, as on a keep-alive connection; a parse error gets the gateway's 400 / 413 and
// ends it.
//
// The fake backend has no model: encode maps each byte to its value as a token id (vocabulary
// 300, context 2048); ids >= 256 decode to lone UTF-8 continuation bytes, so the writer's
// handling of partial characters runs. Its "engine" generates min(max_tokens, 3) tokens per
// choice (the prompt's first ones), through text_stream with the request's stop strings, as the
// real engine does, with log-probabilities when asked.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "actors/http_parse.hpp"
#include "fuzz/fuzz_util.hpp"
#include "runtime/api/http_routes.hpp"
#include "runtime/api/openai.hpp"
#include "runtime/api/openai_http.hpp"
#include "runtime/serve/serving.hpp"
#include "runtime/text/text_stream.hpp"

namespace {

using namespace zf;

constexpr std::size_t k_body_limit = 1 << 20;  // actors/gateway.hpp max_body_bytes
constexpr int k_vocab = 300;
constexpr int k_context = 2048;

class fake_backend final : public serve::completion_backend {
 public:
  const std::string& model_name() const override { return name_; }
  int context_length() const override { return k_context; }
  int vocab_size() const override { return k_vocab; }
  std::vector<int> encode(std::string_view text) const override {
    return std::vector<int>(reinterpret_cast<const unsigned char*>(text.data()),
                            reinterpret_cast<const unsigned char*>(text.data()) + text.size());
  }
  std::string chat_prompt(const std::vector<serve::chat_message>& messages) const override {
    std::string s;
    for (const auto& m : messages) s += m.role + ": " + m.content + "\n";
    return s + "assistant:";
  }
  std::string token_bytes(int id) const override {
    ZF_FUZZ_CHECK(id >= 0 && id < k_vocab, "token_bytes(%d) outside the vocabulary", id);
    return id < 256 ? std::string(1, static_cast<char>(id))
                    : std::string(1, static_cast<char>(0x80 + id % 64));
  }
  serve::submit_result submit(serve::completion_request req, serve::event_sink) override {
    last = std::move(req);
    return {++ids_, 200, 0, {}};
  }
  void cancel(uint64_t) override {}
  std::string metrics_text() const override { return "zeroflow_fake 1\n"; }

  serve::completion_request last;  // what the last submit() got

 private:
  std::string name_ = "zeroflow-fuzz";
  uint64_t ids_ = 0;
};

// Checks the shape of a submitted request (what parse_request promises the engine).
void check_submitted(const serve::completion_request& c) {
  ZF_FUZZ_CHECK(!c.prompt.empty(), "empty prompt");
  ZF_FUZZ_CHECK(c.max_tokens >= 1, "max_tokens %d", c.max_tokens);
  ZF_FUZZ_CHECK(static_cast<int64_t>(c.prompt.size()) + c.max_tokens <= k_context,
                "prompt %zu + max_tokens %d over the context", c.prompt.size(), c.max_tokens);
  ZF_FUZZ_CHECK(c.n >= 1 && c.n <= 16, "n %d", c.n);
  ZF_FUZZ_CHECK(c.sampling.logprobs >= -1 && c.sampling.logprobs <= serve::max_logprobs,
                "logprobs %d", c.sampling.logprobs);
  for (int id : c.prompt) ZF_FUZZ_CHECK(id >= 0 && id < k_vocab, "prompt id %d", id);
  for (const auto& [id, bias] : c.sampling.logit_bias)
    ZF_FUZZ_CHECK(id >= 0 && id < k_vocab, "logit_bias id %d", id);
}

// The engine's side of one accepted request: every choice's events, fed to the call.
void run_engine(openai::http_completion& call, const serve::completion_request& c,
                std::size_t& out_bytes) {
  const int steps = std::min(c.max_tokens, 3);
  for (int i = 0; i < c.n && call.running(); ++i) {
    text_stream ts(c.stop);
    int made = 0;
    for (int k = 0; k < steps && !ts.stopped(); ++k) {
      serve::completion_event e;
      e.request_id = call.id();
      e.index = i;
      const int tok = (c.prompt[k % c.prompt.size()] + i) % k_vocab;
      e.tokens = {tok};
      const std::string bytes =
          tok < 256 ? std::string(1, char(tok)) : std::string(1, char(0x80 + tok % 64));
      e.text = ts.push(bytes);
      if (c.sampling.logprobs >= 0) {
        serve::position_logprobs p{{tok, -0.5f}, {}};
        for (int t = 0; t < c.sampling.logprobs; ++t)
          p.top.push_back({(tok + t) % k_vocab, -0.5f - static_cast<float>(t)});
        e.logprobs.push_back(std::move(p));
      }
      ++made;
      out_bytes += call.on_event(e).chunks.size();
    }
    serve::completion_event last;
    last.request_id = call.id();
    last.index = i;
    if (!ts.stopped()) last.text = ts.finish();
    last.finish = ts.stopped() ? serve::finish_reason::stop : serve::finish_reason::length;
    last.prompt_tokens = static_cast<int>(c.prompt.size());
    last.completion_tokens = made;
    const auto out = call.on_event(last);
    out_bytes += out.chunks.size() + (out.reply ? out.reply->wire(true).size() : 0);
  }
  ZF_FUZZ_CHECK(!call.running(), "every choice finished but the call still runs");
}

// One parsed request, as gateway_session::route handles it. Returns the bytes "written".
std::size_t handle(const actors::parsed_request& req, fake_backend& backend) {
  const openai::http_request& hr = req.head;
  const bool head_only = req.head_only;
  const bool keep_alive = req.keep_alive;
  // With keys (the refusals of --api-key), then without (to reach every handler).
  static const std::vector<std::string> keys = {"sk-fuzz", "sk-other-key"};
  std::size_t out =
      openai::route_request(hr, keys, true).refusal.wire(keep_alive, head_only).size();
  const openai::routing r = openai::route_request(hr, {}, false);
  if (!r.route) return out + r.refusal.wire(keep_alive, head_only).size();
  switch (*r.route) {
    case openai::http_route::completions:
    case openai::http_route::chat: {
      const auto kind = *r.route == openai::http_route::chat ? openai::endpoint::chat
                                                             : openai::endpoint::completions;
      openai::http_completion call(kind, req.body, backend, [](const serve::completion_event&) {});
      if (const auto& refused = call.refused()) return out + refused->wire(keep_alive).size();
      check_submitted(backend.last);
      if (call.streaming()) out += call.head().wire(keep_alive).size();
      run_engine(call, backend.last, out);
      return out;
    }
    case openai::http_route::update_weights: {
      auto parsed = openai::weights_update_request(req.body, true);
      if (auto* refused = std::get_if<openai::http_reply>(&parsed))
        return out + refused->wire(keep_alive).size();
      const auto& u = std::get<openai::weights_update>(parsed);
      ZF_FUZZ_CHECK(!u.path.empty(), "empty weights path");
      const serve::weights_result done{200, u.version.value_or(1), "loaded " + u.path};
      return out + openai::weights_update_reply(done).wire(keep_alive).size();
    }
    case openai::http_route::models:
      return out + openai::models_reply(backend, 0).wire(keep_alive, head_only).size();
    case openai::http_route::health:
      return out + openai::health_reply().wire(keep_alive, head_only).size();
    case openai::http_route::metrics:
      return out + openai::metrics_reply(backend.metrics_text()).wire(keep_alive, head_only).size();
  }
  return out;
}

int done(std::size_t written) {
  zf::fuzz::keep(written);  // so that no reply is optimised away
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static fake_backend backend;
  const std::size_t written = actors::parse_connection_bytes(
      std::string_view(reinterpret_cast<const char*>(data), size), k_body_limit, 8,
      [&](const actors::parsed_request& r) { return handle(r, backend); });
  return done(written);
}
