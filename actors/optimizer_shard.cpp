#include "actors/optimizer_shard.hpp"

#include <algorithm>

#include "kernels/adamw.hpp"

namespace zf::actors {
namespace {

shard_actor::behavior_type optimizer_shard(shard_actor::pointer self,
                                           std::shared_ptr<gpt2_model> model,
                                           std::shared_ptr<adamw> opt) {
  (void)self;
  return {
      [model, opt](gnorm_atom) -> double {
        return kernels::sum_squares(model->grads().data() + opt->begin(),
                                    opt->end() - opt->begin());
      },
      [model, opt](apply_atom, double lr, int step, float grad_scale) -> bool {
        opt->step(model->params().data(), model->grads().data(), lr, step, grad_scale);
        return true;
      },
      [model, opt](snapshot_atom) -> snapshot_ptr {
        auto s = std::make_shared<shard_snapshot>();
        const std::size_t b = opt->begin(), n = opt->end() - opt->begin();
        s->begin = b;
        s->end = opt->end();
        s->params.resize(n);
        s->exp_avg.resize(n);
        s->exp_avg_sq.resize(n);
        std::copy_n(model->params().data() + b, n, s->params.data());
        std::copy_n(opt->m().data(), n, s->exp_avg.data());
        std::copy_n(opt->v().data(), n, s->exp_avg_sq.data());
        return s;
      },
  };
}

}  // namespace

shard_actor spawn_optimizer_shard(caf::actor_system& sys, std::shared_ptr<gpt2_model> model,
                                  std::shared_ptr<adamw> opt) {
  return sys.spawn<caf::detached>(optimizer_shard, std::move(model), std::move(opt));
}

}  // namespace zf::actors
