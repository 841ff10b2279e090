// The engine actor and its completion_backend face. The actor is detached (its own thread,
// since a step blocks for the length of a forward pass) and drives itself with step messages:
// submit and cancel messages queue behind the current step and are handled between steps, so
// new requests join the next forward pass (continuous batching) and a cancel frees its blocks
// at the next step boundary.
// The backend validates a request on the caller's thread (engine_core::validate reads only
// immutable state), bounds the number of outstanding requests (429 past it), assigns the id
// and sends the request to the actor.
#include "actors/engine.hpp"

#include <fmt/format.h>

#include <atomic>
#include <caf/all.hpp>
#include <mutex>
#include <thread>

#include "kernels/threads.hpp"
#include "runtime/chat_template.hpp"
#include "runtime/engine_core.hpp"

namespace zf::actors {
namespace {

struct pending {
  uint64_t id = 0;
  serve::completion_request req;
  serve::event_sink sink;
  engine_core::clock::time_point arrival;
};
using pending_ptr = std::shared_ptr<pending>;

}  // namespace
}  // namespace zf::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(zf::actors::pending_ptr)

namespace zf::actors {
namespace {

using submit_atom = caf::atom_constant<caf::atom("zf_submit")>;
using cancel_atom = caf::atom_constant<caf::atom("zf_cancel")>;
using step_atom = caf::atom_constant<caf::atom("zf_step")>;

struct engine_state {
  engine_core* core = nullptr;
  bool stepping = false;  // a step message is in the mailbox
};

caf::behavior engine_actor(caf::stateful_actor<engine_state>* self, engine_core* core) {
  self->state.core = core;
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
      [self, kick](step_atom) {
        self->state.stepping = false;
        bool more = false;
        try {
          more = self->state.core->step();
        } catch (const std::exception& e) {
          self->state.core->end_all(serve::finish_reason::error, e.what());
        }
        if (more) kick();
      },
  };
}

class engine_backend final : public serve::completion_backend {
 public:
  engine_backend(lm_weights w, tokenizer tok, const engine_options& o)
      : weights_(std::move(w)), tok_(std::move(tok)), max_outstanding_(o.max_queue + o.max_seqs) {
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
    core_ = std::make_unique<engine_core>(weights_, tok_, co);
    sys_ = std::make_unique<caf::actor_system>(sys_cfg_);
    actor_ = sys_->spawn<caf::detached>(engine_actor, core_.get());
  }

  ~engine_backend() override {
    {
      caf::scoped_actor self{*sys_};
      self->monitor(actor_);
      self->send_exit(actor_, caf::exit_reason::user_shutdown);
      self->receive([](const caf::down_msg&) {});
    }
    actor_ = nullptr;
    sys_.reset();
    core_->end_all(serve::finish_reason::cancelled);  // the actor is gone: this thread owns it
  }

  const std::string& model_name() const override { return weights_.cfg.name; }
  int context_length() const override { return weights_.cfg.max_positions; }
  int vocab_size() const override { return weights_.cfg.vocab_size; }

  // Llama-family tokenizers start every text with BOS (their post-processor adds it; ours
  // does not run post-processors), unless the text already begins with it.
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids;
    const int bos = weights_.cfg.bos_id;
    std::lock_guard lk(tok_mu_);
    if (weights_.cfg.arch == lm_arch::llama && bos >= 0) ids.push_back(bos);
    tok_.encode_append(text, ids);
    if (ids.size() > 1 && ids[0] == bos && ids[1] == bos) ids.erase(ids.begin());
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

  std::string metrics_text() const override {
    return core_->stats().text(weights_.cfg.name) +
           fmt::format(
               "# HELP zeroflow_requests_in_flight Requests accepted and not finished.\n"
               "# TYPE zeroflow_requests_in_flight gauge\nzeroflow_requests_in_flight {}\n",
               outstanding_.load());
  }

 private:
  lm_weights weights_;
  tokenizer tok_;
  mutable std::mutex tok_mu_;
  int max_outstanding_;
  std::atomic<int> outstanding_{0};
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<engine_core> core_;
  caf::actor_system_config sys_cfg_;  // the system keeps a reference to it
  std::unique_ptr<caf::actor_system> sys_;
  caf::actor actor_;
};

}  // namespace

std::unique_ptr<serve::completion_backend> make_engine(lm_weights weights, tokenizer tok,
                                                       const engine_options& o) {
  return std::make_unique<engine_backend>(std::move(weights), std::move(tok), o);
}

}  // namespace zf::actors
