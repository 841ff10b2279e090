// The engine actor and the loader actor (actors/serve_protocol.hpp). The engine actor is
// detached (its own thread, since a step blocks for the length of a forward pass) and drives
// itself with step messages: submit, cancel and weights messages queue behind the current step
// and are handled between steps, so new requests join the next forward pass (continuous
// batching), a cancel frees its blocks at the next step boundary and new weights are never
// swapped under a running step. The loader reads weight folders (one at a time, off the
// engine's thread) and hands the weights to the engine actor; only the swap runs on the
// engine's thread. The backend in front of them is actors/engine_backend.cpp.
#include <fmt/format.h>

#include <thread>

#include "actors/serve_protocol.hpp"
#include "kernels/dispatch.hpp"
#include "runtime/core/device_key.hpp"
#include "runtime/core/error.hpp"
#include "storage/lm_loader.hpp"

namespace zf::actors {
namespace {

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

engine_actor::behavior_type engine_behavior(engine_actor::stateful_pointer<engine_state> self,
                                            engine_core* core, bool batch_invariant) {
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
loader_actor::behavior_type loader_behavior(loader_actor::pointer self, engine_actor engine) {
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

}  // namespace

engine_core_options core_options_of(const engine_config& c) {
  if (c.policy != "split_fuse" && c.policy != "static_batch")
    fail("engine.policy: expected split_fuse or static_batch, got '{}'", c.policy);
  engine_core_options o;
  o.sched.policy = c.policy == "split_fuse" ? sched_policy::split_fuse : sched_policy::static_batch;
  o.sched.token_budget = c.token_budget;
  o.sched.max_seqs = c.max_seqs;
  o.sched.block_size = c.block_size;
  o.sched.prefix_caching = c.prefix_caching;
  o.num_blocks = c.kv_blocks;
  o.threads = c.threads > 0 ? c.threads : static_cast<int>(std::thread::hardware_concurrency());
  o.dtype = parse_weight_dtype(c.dtype, "engine.dtype");
  const bool bf16_kv = c.kv_dtype == "auto" ? o.dtype != weight_dtype::fp32 : c.kv_dtype == "bf16";
  if (c.kv_dtype != "auto" && c.kv_dtype != "fp32" && c.kv_dtype != "bf16")
    fail("engine.kv_dtype: expected auto, fp32 or bf16, got '{}'", c.kv_dtype);
  o.kv = bf16_kv ? kv_dtype::bf16 : kv_dtype::fp32;
  o.where = device_named(c.device, "engine.device");
  return o;
}

engine_actor spawn_engine_actor(caf::actor_system& sys, engine_core* core, bool batch_invariant) {
  return sys.spawn<caf::detached>(engine_behavior, core, batch_invariant);
}

loader_actor spawn_loader_actor(caf::actor_system& sys, engine_actor engine) {
  return sys.spawn<caf::detached>(loader_behavior, std::move(engine));
}

}  // namespace zf::actors
