#include "actors/rank_worker.hpp"

namespace zf::actors {
namespace {

worker_actor::behavior_type rank_worker(worker_actor::pointer self,
                                        std::shared_ptr<gpt2_model> model) {
  (void)self;
  return {
      [model](fwdbwd_atom, const batch_ptr& b, float loss_scale) -> float {
        return model->forward_backward(b->inputs.data(), b->targets.data(), b->b, b->t, loss_scale);
      },
      [model](evaluate_atom, const batch_ptr& b) -> float {
        return model->forward(b->inputs.data(), b->targets.data(), b->b, b->t);
      },
      [model](zero_atom) -> bool {
        model->zero_grad();
        return true;
      },
  };
}

}  // namespace

worker_actor spawn_rank_worker(caf::actor_system& sys, std::shared_ptr<gpt2_model> model) {
  return sys.spawn<caf::detached>(rank_worker, std::move(model));
}

}  // namespace zf::actors
