// The trainer's side of actors/engine_remote.hpp: starts the engine process, joins it (CAF for
// control, a two-rank Gloo group for weights) and is its serve::completion_backend.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <caf/io/all.hpp>
#include <map>
#include <mutex>
#include <thread>

#include "actors/backend_text.hpp"
#include "actors/engine_remote.hpp"
#include "actors/engine_remote_protocol.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/serial_queue.hpp"
#include "runtime/dist/comm.hpp"
#include "runtime/serve/engine_child.hpp"
#include "runtime/serve/request_book.hpp"
#include "runtime/text/chat_template.hpp"

namespace zf::actors {
namespace fs = std::filesystem;
namespace {

class remote_engine final : public text_backend {
 public:
  remote_engine(std::shared_ptr<const lm_weights> first, tokenizer tok, const engine_config& c,
                const engine_process_options& o)
      : text_backend(std::move(tok)), spec_(first->cfg), total_(first->layout.total), o_(o) {
    configure_engine_remote(cfg_);
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    child_ = std::make_unique<serve::engine_child>(o.executable, o.work_dir, o.name);
    try {
      join();
      hello(first, c);
      sync_ = std::make_unique<serial_queue>();
    } catch (...) {
      shutdown();
      throw;
    }
    child_->remove_dir();
  }

  ~remote_engine() override { shutdown(); }

  const std::string& model_name() const override { return spec_.name; }
  int context_length() const override { return spec_.max_positions; }
  int vocab_size() const override { return spec_.vocab_size; }

  serve::submit_result submit(serve::completion_request req, serve::event_sink sink) override {
    const uint64_t cid = next_id_.fetch_add(1) + 1;
    if (std::string gone; !book_->open(cid, req.n, std::move(sink), gone)) return {0, 503, 0, gone};
    serve::submit_result r{0, 503, 0, ""};
    caf::scoped_actor self{*sys_};
    self->monitor(host_);
    self->send(host_, rsubmit_atom::value, child_->secret(), cid, std::move(req));
    if (auto x = answer<serve::submit_result>(self, std::chrono::seconds(60), r.message)) r = *x;
    if (r.status == 200) {
      r.id = cid;
      return r;
    }
    // Refused: forget it, unless the engine died meanwhile and already ended it with an error
    // (then it counts as accepted: its sink has been called).
    if (!book_->forget(cid)) return {cid, 200, 0, ""};
    return r;
  }

  void cancel(uint64_t id) override {
    caf::anon_send(host_, rcancel_atom::value, child_->secret(), id);
  }

  std::string metrics_text() const override {
    std::string text, why;
    caf::scoped_actor self{*sys_};
    self->monitor(host_);
    self->send(host_, rmetrics_atom::value, child_->secret());
    if (auto x = answer<std::string>(self, std::chrono::seconds(5), why)) text = std::move(*x);
    return text;
  }

  // snapshot() stays the default, none: the figures live in the engine's process (its /metrics
  // text comes through metrics_text above), so a serve recorder has nothing to sample here.
  uint64_t weights_version() const override { return version_.load(); }
  // Gone: the connection closed (the watcher saw it) or the process ended (a data-plane error
  // may come first); then every request in flight ends with the reason.
  std::string failure() const override {
    if (!book_) return "";
    if (auto g = book_->gone(); !g.empty()) return g;
    if (auto e = child_->ended()) {
      book_->fail_all(*e);
      return book_->gone();
    }
    return "";
  }

  // Queued to the sync thread (one version on the data plane at a time, in order), so that a
  // pool of engines pushes to all of them at once.
  void update_weights_async(std::shared_ptr<const lm_weights> w, std::optional<uint64_t> version,
                            serve::weights_done done) override {
    if (!w || w->layout.total != total_)
      return done({400, version_.load(), "weights of another shape than the engine's"});
    sync_->post(
        [this, w = std::move(w), version, done = std::move(done)] { done(sync_one(*w, version)); });
  }

 private:
  // One version to the engine: the request over CAF, the floats over Gloo, the swap's answer.
  serve::weights_result sync_one(const lm_weights& w, std::optional<uint64_t> version) {
    if (auto g = book_->gone(); !g.empty()) return {503, version_.load(), g};
    const uint64_t v = version.value_or(version_.load() + 1);
    caf::scoped_actor self{*sys_};
    self->monitor(host_);
    serve::weights_result r{503, version_.load(), ""};
    self->send(host_, rweights_atom::value, child_->secret(), v);
    try {
      push(w);
    } catch (const std::exception& e) {
      return {503, version_.load(), gone_or(e.what())};
    }
    if (auto x = answer<serve::weights_result>(self, std::chrono::minutes(10), r.message)) r = *x;
    if (r.status == 200) version_ = r.version;
    return r;
  }

  // The child's port from the rendezvous folder, then the actor and the Gloo group.
  void join() {
    auto store = comm::make_file_store(child_->dir());
    const uint16_t port = child_->wait_port(
        [&]() -> std::string {
          try {
            const auto v = store->get("engine_port", std::chrono::milliseconds(200));
            return {v.begin(), v.end()};
          } catch (const std::exception&) {
            return "";  // not there yet
          }
        },
        o_.start_timeout);
    auto h = sys_->middleman().remote_actor<engine_host_actor>("127.0.0.1", port);
    if (!h)
      fail("{}: cannot reach process {}: {}", o_.name, child_->process().pid(),
           sys_->render(h.error()));
    host_ = *h;
    comm_ = comm::make_gloo(0, 2, store, "127.0.0.1", "weights");
    book_ = std::make_shared<serve::request_book>();
    events_ = sys_->spawn([book = book_](caf::event_based_actor*) -> caf::behavior {
      return {[book](revent_atom, event_batch& b) {
        for (std::size_t i = 0; i < b.ids.size() && i < b.events.size(); ++i)
          book->deliver(b.ids[i], std::move(b.events[i]));
      }};
    });
    // The engine's end: every request in flight fails, naming the engine and how it ended.
    watcher_ = sys_->spawn([this](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(host_);
      self->set_down_handler([this, self](const caf::down_msg&) {
        book_->fail_all(gone_or("the connection closed"));
        self->quit();
      });
      return {[](int) {}};
    });
  }

  void hello(const std::shared_ptr<const lm_weights>& first, const engine_config& c) {
    engine_hello h{spec_, c, fs::absolute(o_.tokenizer_file).string(),
                   std::max<uint64_t>(1, o_.bucket_bytes / sizeof(float))};
    caf::scoped_actor self{*sys_};
    self->monitor(host_);
    self->send(host_, rhello_atom::value, child_->secret(), events_, h);
    push(*first);
    serve::weights_result r{500, 0, ""};
    if (auto x = answer<serve::weights_result>(self, o_.start_timeout, r.message)) r = *x;
    if (r.status != 200) fail("{} (process {}): {}", o_.name, child_->process().pid(), r.message);
  }

  // The host's answer to what `self` (monitoring the host) sent it; nullopt with `why` set when
  // the host ended first (its process and how it ended) or took longer than `timeout`.
  template <class R>
  std::optional<R> answer(caf::scoped_actor& self, std::chrono::milliseconds timeout,
                          std::string& why) const {
    std::optional<R> out;
    self->receive(
        [&](R& x) { out = std::move(x); },
        [&](const caf::down_msg&) { why = gone_or("the connection closed"); },
        [&](caf::error& e) { why = gone_or(sys_->render(e)); },
        caf::after(timeout) >>
            [&] { why = gone_or(fmt::format("no answer within {} s", timeout.count() / 1000)); });
    return out;
  }

  // w's floats to the engine, rank 0 -> 1, bucket by bucket (rank 0 of a broadcast only reads).
  void push(const lm_weights& w) {
    comm::broadcast_buckets(*comm_, const_cast<float*>(w.store.data()), total_,
                            o_.bucket_bytes / sizeof(float), 0);
  }

  // Why the engine is gone when it is (engine_child::gone_or), else `other`.
  std::string gone_or(const std::string& other) const {
    if (auto g = book_ ? book_->gone() : ""; !g.empty()) return g;
    return child_->gone_or(other);
  }

  void shutdown() {
    sync_.reset();  // the queued versions are pushed first
    // The host ends when its client's events actor goes away; the child then exits.
    if (sys_) {
      if (watcher_) caf::anon_send_exit(watcher_, caf::exit_reason::user_shutdown);
      if (events_) caf::anon_send_exit(events_, caf::exit_reason::user_shutdown);
      watcher_ = nullptr;
      events_ = nullptr;
    }
    if (child_) child_->process().wait_or_kill(std::chrono::seconds(10));
    comm_.reset();
    host_ = nullptr;
    sys_.reset();
  }

  model_spec spec_;
  std::size_t total_;
  engine_process_options o_;
  std::unique_ptr<serve::engine_child> child_;  // the process, its folder and secret
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  engine_host_actor host_;
  caf::actor events_, watcher_;
  std::unique_ptr<comm::communicator> comm_;
  std::shared_ptr<serve::request_book> book_;
  std::atomic<uint64_t> next_id_{0}, version_{0};
  std::unique_ptr<serial_queue> sync_;  // weight pushes, in order, off the caller's thread
};

}  // namespace

std::unique_ptr<serve::completion_backend> spawn_engine_process(
    std::shared_ptr<const lm_weights> first, tokenizer tok, const engine_config& c,
    const engine_process_options& o) {
  if (!first) fail("{}: no weights to serve", o.name);
  return std::make_unique<remote_engine>(std::move(first), std::move(tok), c, o);
}

}  // namespace zf::actors
