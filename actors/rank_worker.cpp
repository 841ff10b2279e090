#include "actors/rank_worker.hpp"

namespace zf::actors {
namespace {

worker_actor::behavior_type rank_worker(worker_actor::pointer self, std::shared_ptr<zero_rank> z) {
  (void)self;
  return {
      [z](fwdbwd_atom, const batch_ptr& b, float loss_scale) -> float {
        return z->forward_backward(b->inputs.data(), b->targets.data(), b->b, b->t, loss_scale);
      },
      [z](evaluate_atom, const batch_ptr& b) -> float {
        return z->forward(b->inputs.data(), b->targets.data(), b->b, b->t);
      },
      [z](zero_atom) -> bool {
        z->zero_grad();
        return true;
      },
      [z](reduce_atom) -> bool {
        z->reduce_gradients();
        return true;
      },
      [z](allsum_atom, double x) -> double { return z->all_sum(x); },
  };
}

}  // namespace

worker_actor spawn_rank_worker(caf::actor_system& sys, std::shared_ptr<zero_rank> rank) {
  return sys.spawn<caf::detached>(rank_worker, std::move(rank));
}

}  // namespace zf::actors
