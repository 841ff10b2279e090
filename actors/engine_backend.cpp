// The engine's completion_backend face: validates a request on the caller's thread
// (engine_core::validate reads only immutable state), bounds the requests in flight (429 past
// it), assigns the id and sends it to the engine actor (actors/engine.cpp); weight updates go to
// the engine actor, or through the loader actor when they come from disk.
#include <fmt/format.h>

#include <atomic>
#include <mutex>

#include "actors/backend_text.hpp"
#include "actors/engine.hpp"
#include "actors/serve_protocol.hpp"
#include "kernels/threads.hpp"
#include "runtime/core/error.hpp"
#include "runtime/text/chat_template.hpp"

namespace zf::actors {
namespace {

class engine_backend final : public text_backend {
 public:
  engine_backend(std::shared_ptr<const lm_weights> w, tokenizer tok, const engine_config& c)
      : text_backend(std::move(tok)),
        weights_{w ? w->cfg : model_spec{}},
        inflight_(c.max_queue + c.max_seqs) {
    kernels::set_num_threads(c.threads);
    core_ = std::make_unique<engine_core>(std::move(w), tok_, core_options_of(c));
    sys_ = std::make_unique<caf::actor_system>(sys_cfg_);
    actor_ = spawn_engine_actor(*sys_, core_.get(), c.batch_invariant);
    loader_ = spawn_loader_actor(*sys_, actor_);
  }

  ~engine_backend() override {
    {
      caf::scoped_actor self{*sys_};
      // the loader first: it sends to the engine
      for (const caf::actor& a :
           {caf::actor_cast<caf::actor>(loader_), caf::actor_cast<caf::actor>(actor_)}) {
        self->monitor(a);
        self->send_exit(a, caf::exit_reason::user_shutdown);
        self->receive([](const caf::down_msg&) {});
      }
    }
    loader_ = nullptr;
    actor_ = nullptr;
    sys_.reset();
    core_->end_all(serve::finish_reason::cancelled);  // the actor is gone: this thread owns it
  }

  const std::string& model_name() const override { return weights_.cfg.name; }
  int context_length() const override { return weights_.cfg.max_positions; }
  int vocab_size() const override { return weights_.cfg.vocab_size; }

  serve::submit_result submit(serve::completion_request req, serve::event_sink sink) override {
    if (auto v = core_->validate(req); v.status != 200) return v;
    if (auto busy = inflight_.admit()) return *busy;
    auto p = std::make_shared<pending>();
    p->id = next_id_.fetch_add(1);
    p->arrival = engine_core::clock::now();
    p->sink = inflight_.releasing(req.n, std::move(sink));
    p->req = std::move(req);
    const uint64_t id = p->id;
    caf::anon_send(actor_, submit_atom::value, std::move(p));
    return {id, 200, 0, {}};
  }

  void cancel(uint64_t id) override { caf::anon_send(actor_, cancel_atom::value, id); }

  uint64_t weights_version() const override { return core_->weights_version(); }

  void update_weights_async(std::shared_ptr<const lm_weights> w, std::optional<uint64_t> version,
                            serve::weights_done done) override {
    auto j = new_job(version, std::move(done));
    try {
      if (!w) fail("no weights given");
      core_->check_weights(*w);  // refused at once, without a trip through the engine
    } catch (const error& e) {
      return j->finish(400, e.what());
    }
    j->weights = std::move(w);
    caf::anon_send(actor_, weights_atom::value, std::move(j));
  }

  void update_weights_from_disk(std::string path, std::optional<uint64_t> version,
                                serve::weights_done done) override {
    auto j = new_job(version, std::move(done));
    j->path = std::move(path);
    caf::anon_send(loader_, load_atom::value, std::move(j));
  }

  std::string metrics_text() const override {
    return core_->stats().text(weights_.cfg.name) + inflight_.metrics_text();
  }

  std::optional<serve::engine_snapshot> snapshot() const override {
    return core_->stats().snapshot();
  }
  bool observe_steps(step_observer f) override {
    core_->observe_steps(std::move(f));
    return true;
  }

 private:
  weights_job_ptr new_job(std::optional<uint64_t> version, serve::weights_done done) const {
    auto j = std::make_shared<weights_job>();
    j->version = version;
    j->done = std::move(done);
    j->core = core_.get();
    return j;
  }

  // The served model's configuration: that of the first weights for the backend's life (an
  // update must keep the shape; names and special tokens stay).
  struct served_model {
    model_spec cfg;
  } weights_;
  serve::inflight_limit inflight_;
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<engine_core> core_;
  caf::actor_system_config sys_cfg_;  // the system keeps a reference to it
  std::unique_ptr<caf::actor_system> sys_;
  engine_actor actor_;
  loader_actor loader_;
};

}  // namespace

std::unique_ptr<serve::completion_backend> make_engine(std::shared_ptr<const lm_weights> weights,
                                                       tokenizer tok, const engine_config& c) {
  return std::make_unique<engine_backend>(std::move(weights), std::move(tok), c);
}

std::unique_ptr<serve::completion_backend> make_engine(lm_weights weights, tokenizer tok,
                                                       const engine_config& c) {
  return make_engine(std::make_shared<const lm_weights>(std::move(weights)), std::move(tok), c);
}

}  // namespace zf::actors
