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
      // copies this rank's persisted slices into the job; replies them as {begin, length} pairs
      [z](snapshot_atom, const checkpoint_job_ptr& job) -> std::vector<uint64_t> {
        z->export_state(job->params.data(), job->exp_avg.data(), job->exp_avg_sq.data());
        std::vector<uint64_t> out;
        for (auto& sl : z->persisted()) out.insert(out.end(), {sl.flat_begin, sl.len});
        return out;
      },
  };
}

}  // namespace

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<zero_rank> rank) {
  return sys.spawn<caf::detached>(optimizer_shard, std::move(rank));
}

}  // namespace zf::actors
