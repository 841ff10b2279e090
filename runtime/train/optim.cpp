#include "runtime/train/optim.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/adamw.hpp"

namespace zf {

double warmup_lr(const optimizer_config& o, const schedule_config& sc, int s) {
  return o.lr * (s + 1) / sc.warmup;
}

double cosine_lr(const optimizer_config& o, const schedule_config& sc, double progress) {
  const double lr_min = o.lr * sc.min_lr_ratio;
  const double p = std::clamp(progress, 0.0, 1.0);
  return lr_min + 0.5 * (o.lr - lr_min) * (1.0 + std::cos(std::numbers::pi * p));
}

double lr_at(const optimizer_config& o, const schedule_config& sc, int steps, int s) {
  if (s < sc.warmup) return warmup_lr(o, sc, s);
  return cosine_lr(o, sc, double(s - sc.warmup) / std::max(1, steps - sc.warmup));
}

float clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  // torch computes the ratio in fp32 from fp32 norm
  float coef = static_cast<float>(max_norm) / (static_cast<float>(norm) + 1e-6f);
  return std::min(coef, 1.0f);
}

void adamw::add(const param_layout& layout, std::size_t flat, const adamw_range& r) {
  for (auto& p : layout.params) {
    std::size_t b = std::max(flat, p.offset), e = std::min(flat + r.len, p.offset + p.numel);
    if (b >= e) continue;
    std::size_t d = b - flat;
    spans_.push_back({{r.p + d, r.g + d, r.m + d, e - b}, p.decay});
  }
}

adamw::adamw(const param_layout& layout, std::size_t begin, std::size_t end,
             const optimizer_config& t, device where)
    : begin_(begin), end_(end), t_(t), m_(end - begin, where), v_(end - begin, where) {
  add(layout, begin, {begin, begin, 0, end - begin});
}

adamw::adamw(const param_layout& layout, const std::vector<mapped>& ranges,
             const optimizer_config& t, device where)
    : t_(t), m_(where), v_(where) {
  std::size_t moments = 0;
  for (auto& m : ranges) {
    add(layout, m.flat, m.r);
    moments = std::max(moments, m.r.m + m.r.len);
  }
  m_.resize(moments);
  v_.resize(moments);
}

void adamw::step(float* params, const float* grads, double lr, int step, float grad_scale) {
  const kernels::device_scope on(m_.where());
  kernels::adamw_params a;
  a.lr = static_cast<float>(lr);
  a.beta1 = static_cast<float>(t_.beta1);
  a.beta2 = static_cast<float>(t_.beta2);
  a.eps = static_cast<float>(t_.eps);
  a.step = step;
  a.grad_scale = grad_scale;
  for (auto& s : spans_) {
    a.weight_decay = s.decay ? static_cast<float>(t_.weight_decay) : 0.0f;
    kernels::adamw_step(params + s.r.p, grads + s.r.g, m_.data() + s.r.m, v_.data() + s.r.m,
                        s.r.len, a);
  }
}

}  // namespace zf
