#include "runtime/rl/model_step.hpp"

#include <algorithm>
#include <cmath>

namespace zf::rl {

double grad_norm(transformer& m) {
  double sq = 0;
  const float* g = m.grads().data();
  for (std::size_t i = 0; i < m.grads().size(); ++i) sq += double(g[i]) * g[i];
  return std::sqrt(sq);
}

double clipped_step(transformer& m, adamw& opt, double clip, double lr, int step) {
  const double norm = grad_norm(m);
  opt.step(m.params().data(), m.grads().data(), lr, step, clip_coefficient(norm, clip));
  return norm;
}

namespace {
optimizer_config with_lr(optimizer_config o, double lr) {
  o.lr = lr;
  return o;
}
}  // namespace

scheduled_adamw::scheduled_adamw(transformer& m, const optimizer_config& opt, double lr, int steps)
    : m_(m), oc_(with_lr(opt, lr)), steps_(steps), opt_(m.layout(), 0, m.layout().total, oc_) {
  sc_.warmup = std::max(1, steps / 10);
}

double scheduled_adamw::step(int s) {
  return clipped_step(m_, opt_, oc_.grad_clip, lr_at(oc_, sc_, steps_, s), s + 1);
}

}  // namespace zf::rl
