#include "actors/rank_worker.hpp"

#include "actors/error_text.hpp"

namespace zf::actors {
namespace {

// Spans: one per micro-batch (forward_backward), validation batch (evaluate) and step (reduce).
worker_actor::behavior_type rank_worker(worker_actor::pointer self, std::shared_ptr<zero_rank> z,
                                        actor_spans sp) {
  answer_exceptions_with_text(self);
  return {
      [z, sp](fwdbwd_atom, const batch_ptr& b, float loss_scale) -> float {
        return sp.timed("forward_backward", [&] { return z->forward_backward(*b, loss_scale); });
      },
      [z, sp](evaluate_atom, const batch_ptr& b) -> float {
        return sp.timed("evaluate", [&] {
          return z->forward(b->inputs.data(), b->targets.data(), b->b, b->t);
        });
      },
      [z](zero_atom) -> bool {
        z->zero_grad();
        return true;
      },
      [z, sp](reduce_atom) -> bool {
        return sp.timed("reduce", [&] {
          z->reduce_gradients();
          return true;
        });
      },
      [z](allsum_atom, double x) -> double { return z->all_sum(x); },
      [z](moe_atom) -> std::vector<double> { return z->model().moe_step().pack(); },
  };
}

}  // namespace

worker_actor spawn_rank_worker(caf::actor_system& sys, std::shared_ptr<zero_rank> rank,
                               actor_spans spans) {
  return sys.spawn<caf::detached>(rank_worker, std::move(rank), std::move(spans));
}

}  // namespace zf::actors
