#include "runtime/optim.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/adamw.hpp"

namespace zf {

double lr_at(const train_config& t, int s) {
  if (s < t.warmup) return t.lr * (s + 1) / t.warmup;
  const double lr_min = t.lr * t.min_lr_ratio;
  const double progress = double(s - t.warmup) / std::max(1, t.steps - t.warmup);
  const double p = std::min(1.0, progress);
  return lr_min + 0.5 * (t.lr - lr_min) * (1.0 + std::cos(std::numbers::pi * p));
}

float clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  // torch computes the ratio in fp32 from fp32 norm
  float coef = static_cast<float>(max_norm) / (static_cast<float>(norm) + 1e-6f);
  return std::min(coef, 1.0f);
}

adamw::adamw(const param_layout& layout, std::size_t begin, std::size_t end, const train_config& t)
    : begin_(begin), end_(end), t_(t), m_(end - begin), v_(end - begin) {
  for (auto& p : layout.params) {
    std::size_t b = std::max(begin, p.offset), e = std::min(end, p.offset + p.numel);
    if (b < e) spans_.push_back({b, e, p.decay});
  }
}

void adamw::step(float* params, const float* grads, double lr, int step, float grad_scale) {
  kernels::adamw_params a;
  a.lr = static_cast<float>(lr);
  a.beta1 = static_cast<float>(t_.beta1);
  a.beta2 = static_cast<float>(t_.beta2);
  a.eps = static_cast<float>(t_.eps);
  a.step = step;
  a.grad_scale = grad_scale;
  for (auto& s : spans_) {
    a.weight_decay = s.decay ? static_cast<float>(t_.weight_decay) : 0.0f;
    kernels::adamw_step(params + s.begin, grads + s.begin, m_.data() + (s.begin - begin_),
                        v_.data() + (s.begin - begin_), s.end - s.begin, a);
  }
}

}  // namespace zf
