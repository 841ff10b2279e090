// The OpenAI-compatible server on one gateway connection (http_connection.hpp does the socket
// work): routes each request (runtime/api/http_routes.hpp), runs completions and weight updates in
// the backend and writes their answers (runtime/api/openai_http.hpp). A client that leaves while
// its request runs gets the request cancelled in the backend at once.
//
// Backend callbacks run on the backend's threads and never block or touch the session: events
// queue in inbox_, and the hop to the session's strand goes through the io_context (not the
// strand: a sink may outlive the io_context and the strand's executor must not), on an io thread,
// through a weak_ptr; the gateway nulls st->ioc under sink_mu before destroying the io_context.
#include "actors/gateway_session.hpp"

#include "actors/console_http.hpp"
#include "actors/http_connection.hpp"  // first: it orders <utility> before Asio
#include "runtime/api/openai_http.hpp"

namespace zf::actors::detail {

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using openai::http_route;

std::string_view view(boost::beast::string_view s) {
  return {s.data(), s.size()};
}

class session final : public connection {
 public:
  session(boost::asio::ip::tcp::socket s, std::shared_ptr<gateway_state> st, bool overflow)
      : connection(std::move(s), st, overflow), gw_(std::move(st)) {}
  ~session() override {
    if (running()) gw_->backend.cancel(call_->id());  // gateway shutdown with a request running
  }

 private:
  bool running() const { return call_ && call_->running(); }
  std::weak_ptr<session> weak_self() {
    return std::static_pointer_cast<session>(shared_from_this());
  }

  void handle(const request& req) override {
    try {
      route(req);
    } catch (const std::exception& e) {  // e.g. the backend's encode threw
      if (running()) return close();
      send(openai::internal_error(e.what()));
    }
  }

  void route(const request& req) {
    if (gw_->opts.console && gw_->opts.console->owns(view(req.target())) && !overflow_)
      return console(req);
    const auto auth = req.find(http::field::authorization);
    const openai::routing r = openai::route_request(
        {view(req.method_string()), view(req.target()),
         auth == req.end() ? std::nullopt : std::optional(view(auth->value()))},
        gw_->opts.api_keys, gw_->opts.protect_metrics);
    label_ = r.label;
    if (!r.route) return send(r.refusal);
    if (overflow_ && *r.route != http_route::health && *r.route != http_route::metrics)
      return send(openai::too_many_connections());
    const bool http10 = req.version() < 11;
    switch (*r.route) {
      case http_route::completions:
        return generate(openai::endpoint::completions, req.body(), http10);
      case http_route::chat:
        return generate(openai::endpoint::chat, req.body(), http10);
      case http_route::update_weights:
        return update_weights(req.body());
      case http_route::models:
        return send(openai::models_reply(gw_->backend, gw_->created));
      case http_route::health:
        return send(openai::health_reply());
      case http_route::metrics:
        return send(openai::metrics_reply(st_->metrics.text(gw_->backend.metrics_text())));
    }
  }

  // The console's routes (console_http.hpp): a reply, or an event stream on this connection.
  void console(const request& req) {
    auto field = [&](auto f) -> std::optional<std::string_view> {
      auto it = req.find(f);
      if (it == req.end()) return std::nullopt;
      return view(it->value());
    };
    console_site::answer a = gw_->opts.console->handle(
        {view(req.method_string()), view(req.target()), field(http::field::authorization),
         field(http::field::cookie), field("Last-Event-ID")});
    label_ = a.label;
    if (a.stream) return stream(a.reply, std::move(a.stream), console_site::stream_every);
    send(a.reply);
  }

  // Parsing and tokenizing run on the prepare pool (a long prompt must not hold an io thread);
  // prepared() continues on this strand. The disconnect watch runs meanwhile.
  void generate(openai::endpoint kind, std::string_view body, bool http10) {
    call_.reset();
    preparing_ = true;
    openai::completion_options o{gw_->opts.max_prompt_bytes, !http10};
    net::post(*gw_->prepare, [self = weak_self().lock(), kind, body = std::string(body), o,
                              sink = make_sink(++gen_)]() mutable {
      prepared_call p;
      try {
        p.call = std::make_unique<openai::http_completion>(kind, body, self->gw_->backend,
                                                           std::move(sink), o);
      } catch (const std::exception& e) {  // e.g. the backend's encode threw
        p.error = e.what();
      }
      net::dispatch(self->executor(),
                    [self, p = std::move(p)]() mutable { self->prepared(std::move(p)); });
    });
    watch();
  }

  struct prepared_call {
    std::unique_ptr<openai::http_completion> call;
    std::string error;  // set: constructing the call threw
  };

  void prepared(prepared_call p) {
    preparing_ = false;
    call_ = std::move(p.call);
    if (closed_) {  // the client left while the request was prepared
      if (running()) gw_->backend.cancel(call_->id());
      return;
    }
    if (!call_) return send(openai::internal_error(p.error));
    if (const auto& refused = call_->refused()) return send(*refused);
    if (call_->streaming()) send(call_->head());
    drain_inbox();  // events that arrived while preparing
  }

  void on_event(uint64_t gen, const serve::completion_event& e) {
    if (closed_ || gen != gen_ || !running()) return;  // a previous request's event
    openai::http_completion::output out = call_->on_event(e);
    if (out.reply) return send(*out.reply);
    write(std::move(out.chunks), out.last);
  }

  void on_close() override {
    if (running()) gw_->backend.cancel(call_->id());
    call_.reset();
  }

  // The backend loads the folder off its engine thread and swaps it in; watch() keeps the
  // session alive meanwhile (the callback holds a weak_ptr).
  void update_weights(std::string_view body) {
    auto parsed = openai::weights_update_request(body, gw_->weight_updates);
    if (auto* refused = std::get_if<openai::http_reply>(&parsed)) return send(*refused);
    auto& u = std::get<openai::weights_update>(parsed);
    updating_ = true;
    gw_->backend.update_weights_from_disk(
        std::move(u.path), u.version,
        [weak = weak_self(), st = gw_](const serve::weights_result& r) {
          post_from_backend(st, weak, [r](session& s) { s.on_weights_done(r); });
        });
    watch();
  }

  void on_weights_done(const serve::weights_result& r) {
    if (closed_ || !std::exchange(updating_, false)) return;
    send(openai::weights_update_reply(r));
  }

  serve::event_sink make_sink(uint64_t gen) {
    return [weak = weak_self(), st = gw_, box = inbox_, gen](const serve::completion_event& e) {
      if (box->push(gen, e)) post_from_backend(st, weak, [](session& s) { s.drain_inbox(); });
    };
  }

  // Runs fn(session) on the session's strand, from a backend thread, while the gateway and the
  // session live: through the io_context, then the weak_ptr.
  template <class F>
  static void post_from_backend(const std::shared_ptr<gateway_state>& st,
                                std::weak_ptr<session> weak, F fn) {
    std::lock_guard lock(st->sink_mu);
    if (!st->ioc) return;
    net::post(*st->ioc, [weak = std::move(weak), fn = std::move(fn)]() mutable {
      if (auto s = weak.lock())
        net::dispatch(s->executor(), [s, fn = std::move(fn)]() mutable { fn(*s); });
    });
  }

  void drain_inbox() {
    if (preparing_) return;  // prepared() drains; the inbox stays scheduled until then
    for (const auto& [gen, e] : inbox_->take()) on_event(gen, e);
  }

  std::shared_ptr<gateway_state> gw_;  // st_, as the gateway's
  std::shared_ptr<event_inbox> inbox_ = std::make_shared<event_inbox>();
  uint64_t gen_ = 0;  // bumped per request; stale events are dropped
  std::unique_ptr<openai::http_completion> call_;
  bool preparing_ = false;  // the current request is on the prepare pool
  bool updating_ = false;   // a weight update's answer is awaited
};

}  // namespace

void start_session(boost::asio::ip::tcp::socket socket, std::shared_ptr<gateway_state> state,
                   bool overflow) {
  std::make_shared<session>(std::move(socket), std::move(state), overflow)->start();
}

}  // namespace zf::actors::detail
