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
      [z](snapshot_atom, const checkpoint_job_ptr& job) -> bool {
        z->export_state(job->params.data(), job->exp_avg.data(), job->exp_avg_sq.data());
        if (job->assemble_over_group) {  // disjoint slices, zeros elsewhere: a sum assembles
          z->all_sum(job->params.data(), job->params.size());
          z->all_sum(job->exp_avg.data(), job->exp_avg.size());
          z->all_sum(job->exp_avg_sq.data(), job->exp_avg_sq.size());
        }
        return true;
      },
  };
}

}  // namespace

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<zero_rank> rank) {
  return sys.spawn<caf::detached>(optimizer_shard, std::move(rank));
}

}  // namespace zf::actors
