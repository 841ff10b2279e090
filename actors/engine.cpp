// The engine actor and its completion_backend face. The actor is detached (its own thread,
// since a step blocks for the length of a forward pass) and drives itself with step messages:
// submit, cancel and weights messages queue behind the current step and are handled between
// steps, so new requests join the next forward pass (continuous batching), a cancel frees its
// blocks at the next step boundary and new weights are never swapped under a running step.
// The backend validates a request on the caller's thread (engine_core::validate reads only
// immutable state), bounds the number of outstanding requests (429 past it), assigns the id
// and sends the request to the actor. Weight updates from disk are read by a second detached
// actor (the loader: one folder at a time, off the engine's thread) that hands the weights to
// the engine actor; only the swap runs on the engine's thread.
#include "actors/engine.hpp"

#include <fmt/format.h>

#include <atomic>
#include <caf/all.hpp>
#include <mutex>
#include <thread>

#include "kernels/dispatch.hpp"
#include "kernels/threads.hpp"
#include "runtime/chat_template.hpp"
#include "runtime/engine_core.hpp"
#include "runtime/error.hpp"
#include "storage/lm_loader.hpp"

namespace zf::actors {
namespace {

struct pending {
  uint64_t id = 0;
  serve::completion_request req;
  serve::event_sink sink;
  engine_core::clock::time_point arrival;
};
using pending_ptr = std::shared_ptr<pending>;

// One weight update on its way: loaded from path by the loader when weights is null. done is
// answered exactly once; a job dropped unanswered (the backend shut down) answers 503.
struct weights_job {
  std::shared_ptr<const lm_weights> weights;
  std::string path;
  std::optional<uint64_t> version;
  serve::weights_done done;
  const engine_core* core = nullptr;  // for the served version and the shape check
  void finish(int status, std::string message) {
    if (auto d = std::exchange(done, nullptr)) d({status, core->weights_version(), message});
  }
  ~weights_job() { finish(503, "the engine shut down before the weights were swapped"); }
};
using weights_job_ptr = std::shared_ptr<weights_job>;

}  // namespace
}  // namespace zf::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::pending_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::weights_job_ptr)

namespace zf::actors {
namespace {

using submit_atom = caf::atom_constant<caf::atom("zf_submit")>;
using cancel_atom = caf::atom_constant<caf::atom("zf_cancel")>;
using step_atom = caf::atom_constant<caf::atom("zf_step")>;
using weights_atom = caf::atom_constant<caf::atom("zf_weights")>;
using load_atom = caf::atom_constant<caf::atom("zf_load")>;

struct engine_state {
  engine_core* core = nullptr;
  bool stepping = false;         // a step message is in the mailbox
  bool batch_invariant = false;  // run steps with kernels::batch_invariant_scope
};

// The swap, between two steps; the preempted sequences go on at the next step.
void swap_weights(engine_core& core, weights_job& j) {
  try {
    const uint64_t v = core.update_weights(std::move(j.weights), j.version);
    j.finish(200, j.path.empty() ? fmt::format("serving weights version {}", v)
                                 : fmt::format("serving {} as weights version {}", j.path, v));
  } catch (const error& e) {
    j.finish(400, e.what());
  } catch (const std::exception& e) {
    j.finish(500, e.what());
  }
}

caf::behavior engine_actor(caf::stateful_actor<engine_state>* self, engine_core* core,
                           bool batch_invariant) {
  self->state.core = core;
  self->state.batch_invariant = batch_invariant;
  auto kick = [self] {
    if (self->state.stepping) return;
    self->state.stepping = true;
    self->send(self, step_atom::value);
  };
  return {
      [self, kick](submit_atom, const pending_ptr& p) {
        auto r = self->state.core->submit(p->id, std::move(p->req), p->sink, p->arrival);
        if (r.status != 200 && p->sink) {  // validated already; only a race could land here
          serve::completion_event e;
          e.request_id = p->id;
          e.finish = serve::finish_reason::error;
          e.error = r.message;
          p->sink(e);
        }
        kick();
      },
      [self](cancel_atom, uint64_t id) { self->state.core->cancel(id); },
      [self, kick](weights_atom, const weights_job_ptr& j) {
        swap_weights(*self->state.core, *j);
        kick();
      },
      [self, kick](step_atom) {
        self->state.stepping = false;
        bool more = false;
        kernels::batch_invariant_scope invariant(self->state.batch_invariant);
        try {
          more = self->state.core->step();
        } catch (const std::exception& e) {
          self->state.core->end_all(serve::finish_reason::error, e.what());
        }
        if (more) kick();
      },
  };
}

// Reads a job's folder and passes it on to the engine; a folder that does not load, or holds
// weights of another shape, is answered here and never reaches the engine.
caf::behavior loader_actor(caf::event_based_actor* self, caf::actor engine) {
  return {
      [self, engine](load_atom, const weights_job_ptr& j) {
        try {
          auto w = std::make_shared<const lm_weights>(storage::load_lm_weights(j->path));
          j->core->check_weights(*w);
          j->weights = std::move(w);
        } catch (const error& e) {
          return j->finish(400, fmt::format("{}: {}", j->path, e.what()));
        } catch (const std::exception& e) {
          return j->finish(500, fmt::format("{}: {}", j->path, e.what()));
        }
        self->send(engine, weights_atom::value, j);
      },
  };
}

class engine_backend final : public serve::completion_backend {
 public:
  engine_backend(std::shared_ptr<const lm_weights> w, tokenizer tok, const engine_options& o)
      : weights_{w ? w->cfg : lm_config{}},
        tok_(std::move(tok)),
        max_outstanding_(o.max_queue + o.max_seqs) {
    kernels::set_num_threads(o.threads);
    engine_core_options co;
    co.sched.policy = o.policy == engine_options::policy_kind::split_fuse
                          ? sched_policy::split_fuse
                          : sched_policy::static_batch;
    co.sched.token_budget = o.token_budget;
    co.sched.max_seqs = o.max_seqs;
    co.sched.block_size = o.block_size;
    co.sched.prefix_caching = o.prefix_caching;
    co.num_blocks = o.num_blocks;
    co.threads = o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency());
    core_ = std::make_unique<engine_core>(std::move(w), tok_, co);
    sys_ = std::make_unique<caf::actor_system>(sys_cfg_);
    actor_ = sys_->spawn<caf::detached>(engine_actor, core_.get(), o.batch_invariant);
    loader_ = sys_->spawn<caf::detached>(loader_actor, actor_);
  }

  ~engine_backend() override {
    {
      caf::scoped_actor self{*sys_};
      for (caf::actor* a : {&loader_, &actor_}) {  // the loader first: it sends to the engine
        self->monitor(*a);
        self->send_exit(*a, caf::exit_reason::user_shutdown);
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

  // Special tokens as the model's own tokenizer files say (tokenizer.json post_processor,
  // tokenizer_config.json add_bos_token/add_eos_token), as transformers and vLLM add them. A
  // text that already starts with them (a chat template's <|begin_of_text|>) does not get them
  // twice.
  std::vector<int> encode(std::string_view text) const override {
    std::lock_guard lk(tok_mu_);
    std::vector<int> ids = tok_.encode_with_special(text);
    const std::vector<int>& pre = tok_.prompt_specials().prefix;
    const std::size_t n = pre.size();
    if (n && ids.size() >= 2 * n && std::equal(pre.begin(), pre.end(), ids.begin() + long(n)))
      ids.erase(ids.begin(), ids.begin() + long(n));
    return ids;
  }
  std::string chat_prompt(const std::vector<serve::chat_message>& m) const override {
    std::lock_guard lk(tok_mu_);
    return format_chat(tok_, m);
  }
  // The vocabulary tables are immutable: no lock (see tokenizer.hpp, "Threading").
  std::string token_bytes(int id) const override { return tok_.token_bytes(id); }

  serve::submit_result submit(serve::completion_request req, serve::event_sink sink) override {
    if (auto v = core_->validate(req); v.status != 200) return v;
    if (outstanding_.fetch_add(1) >= max_outstanding_) {
      outstanding_.fetch_sub(1);
      return {0, 429, 1, "the server is busy: too many requests in flight; retry later"};
    }
    auto p = std::make_shared<pending>();
    p->id = next_id_.fetch_add(1);
    p->arrival = engine_core::clock::now();
    // Count the request out when its last choice ends.
    auto left = std::make_shared<int>(req.n);
    p->sink = [this, left, sink = std::move(sink)](const serve::completion_event& e) {
      // count out first: whoever sees the last final event may submit again at once
      if (e.finish != serve::finish_reason::none && --*left == 0) outstanding_.fetch_sub(1);
      if (sink) sink(e);
    };
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
    return core_->stats().text(weights_.cfg.name) +
           fmt::format(
               "# HELP zeroflow_requests_in_flight Requests accepted and not finished.\n"
               "# TYPE zeroflow_requests_in_flight gauge\nzeroflow_requests_in_flight {}\n",
               outstanding_.load());
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
    lm_config cfg;
  } weights_;
  tokenizer tok_;
  mutable std::mutex tok_mu_;
  int max_outstanding_;
  std::atomic<int> outstanding_{0};
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<engine_core> core_;
  caf::actor_system_config sys_cfg_;  // the system keeps a reference to it
  std::unique_ptr<caf::actor_system> sys_;
  caf::actor actor_;
  caf::actor loader_;
};

}  // namespace

std::unique_ptr<serve::completion_backend> make_engine(std::shared_ptr<const lm_weights> weights,
                                                       tokenizer tok, const engine_options& o) {
  return std::make_unique<engine_backend>(std::move(weights), std::move(tok), o);
}

std::unique_ptr<serve::completion_backend> make_engine(lm_weights weights, tokenizer tok,
                                                       const engine_options& o) {
  return make_engine(std::make_shared<const lm_weights>(std::move(weights)), std::move(tok), o);
}

}  // namespace zf::actors
