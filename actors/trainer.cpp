#include "actors/trainer.hpp"

#include <memory>

#include "actors/train_adapters.hpp"

namespace zf::actors {
namespace {

trainer_actor::behavior_type trainer(trainer_actor::pointer self,
                                     std::shared_ptr<const trainer_setup> s) {
  return {
      [self, s](run_atom) -> train_result {
        // Detached: blocking here holds only the trainer's own thread. The loop's requests go
        // through a scoped actor, the one way to wait for replies inside an event-based actor.
        caf::scoped_actor io{self->system()};
        auto ranks = make_actor_ranks(io, s->workers, s->shards);
        auto data = make_sampler_source(io, s->sampler);
        auto sink = make_actor_sink(io, s->monitor, s->writer);
        train_loop_options o = s->loop;
        o.checkpoints = o.checkpoints && bool(s->writer);
        return train_loop(std::move(o), *ranks, *data, *sink).run();
      },
  };
}

}  // namespace

trainer_actor spawn_trainer(caf::actor_system& sys, trainer_setup setup) {
  // The setup travels as a spawn argument (not a capture): CAF 0.17 binds a reference to a
  // null tuple for argument-less spawns, which UBSan reports.
  return sys.spawn<caf::detached>(trainer, std::make_shared<const trainer_setup>(std::move(setup)));
}

}  // namespace zf::actors
