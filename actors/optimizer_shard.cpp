#include "actors/optimizer_shard.hpp"

namespace zf::actors {
namespace {

shard_actor::behavior_type optimizer_shard(shard_actor::pointer self,
                                           std::shared_ptr<zero_rank> z) {
  (void)self;
  return {
      [z](gnorm_atom) -> double { return z->grad_sq_norm(); },
      [z](apply_atom, double lr, int step, float grad_scale) -> bool {
        z->step(lr, step, grad_scale);
        return true;
      },
      // a copy of the slices this rank persists (its share only: training goes on meanwhile)
      [z](snapshot_atom) -> zero_snapshot_ptr {
        return std::make_shared<const zero_snapshot>(z->snapshot());
      },
  };
}

}  // namespace

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<zero_rank> rank) {
  return sys.spawn<caf::detached>(optimizer_shard, std::move(rank));
}

}  // namespace zf::actors
