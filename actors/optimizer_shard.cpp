#include "actors/optimizer_shard.hpp"

#include "actors/error_text.hpp"

namespace zf::actors {
namespace {

shard_actor::behavior_type optimizer_shard(shard_actor::pointer self, std::shared_ptr<zero_rank> z,
                                           actor_spans sp) {
  answer_exceptions_with_text(self);
  return {
      [z, sp](gnorm_atom) -> double {
        return sp.timed("grad_norm", [&] { return z->grad_sq_norm(); });
      },
      [z, sp](apply_atom, double lr, int step, float grad_scale) -> bool {
        return sp.timed("step", [&] {
          z->step(lr, step, grad_scale);
          return true;
        });
      },
      // a copy of the slices this rank persists (its share only: training goes on meanwhile)
      [z, sp](snapshot_atom) -> zero_snapshot_ptr {
        return sp.timed("snapshot",
                        [&] { return std::make_shared<const zero_snapshot>(z->snapshot()); });
      },
  };
}

}  // namespace

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<zero_rank> rank,
                                  actor_spans spans) {
  return sys.spawn<caf::detached>(optimizer_shard, std::move(rank), std::move(spans));
}

}  // namespace zf::actors
