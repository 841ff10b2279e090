#pragma once
// AdamW over a slice of the flat parameter buffer (an optimizer shard owns [begin, end) of it),
// the warm-up + cosine learning-rate schedule and global-norm gradient clipping.
// Semantics equal torch.optim.AdamW with two param groups (decay on matrices and embeddings,
// none on biases and LayerNorm) and torch.nn.utils.clip_grad_norm_.
#include <cstddef>

#include "runtime/core/config.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/model/model.hpp"

namespace zf {

// lr at 0-based step s of `steps`: linear warm-up to o.lr over s.warmup steps, then cosine to
// o.lr * s.min_lr_ratio at the last step.
double lr_at(const optimizer_config& o, const schedule_config& s, int steps, int step);
// The schedule's two parts, for schedules that measure progress otherwise (data_schedule: by
// tokens or layer-tokens): the warm-up lr at step < s.warmup, and the cosine from o.lr to
// o.lr * s.min_lr_ratio at progress 0..1 (clamped).
double warmup_lr(const optimizer_config& o, const schedule_config& s, int step);
double cosine_lr(const optimizer_config& o, const schedule_config& s, double progress);
// The same for a run: its optimizer, schedule and train.steps.
inline double lr_at(const run_config& c, int step) {
  return lr_at(c.optimizer, c.schedule, c.train.steps, step);
}

// clip_grad_norm_'s coefficient: min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0.
float clip_coefficient(double norm, double max_norm);

// A run of floats the optimizer updates: params[p + i], grads[g + i], moments[m + i] for
// i < len. Index spaces differ by ZeRO stage (flat layout or a rank's packed partition).
struct adamw_range {
  std::size_t p, g, m, len;
};

class adamw {
 public:
  // Owns moments for parameters [begin, end) of layout (in floats); params and grads passed to
  // step() are the full flat buffers.
  // where: the device of the moments (and of the params and grads step() is given); cuda keeps
  // them in GPU memory and steps there.
  adamw(const param_layout& layout, std::size_t begin, std::size_t end, const optimizer_config& o,
        device where = device::cpu);
  // General form (ZeRO): ranges are split at tensor boundaries of layout to apply decay; `flat`
  // gives each range's position in the flat layout (for the decay mask).
  struct mapped {
    std::size_t flat;  // flat layout offset of the range's first float
    adamw_range r;
  };
  adamw(const param_layout& layout, const std::vector<mapped>& ranges, const optimizer_config& o,
        device where = device::cpu);

  // One update of every range with grads scaled by grad_scale; step is the 1-based optimizer
  // step (bias correction).
  void step(float* params, const float* grads, double lr, int step, float grad_scale);

  fbuffer& m() { return m_; }
  fbuffer& v() { return v_; }
  std::size_t begin() const { return begin_; }
  std::size_t end() const { return end_; }
  std::size_t moments_size() const { return m_.size(); }

 private:
  struct span {
    adamw_range r;
    bool decay;
  };
  void add(const param_layout& layout, std::size_t flat, const adamw_range& r);
  std::vector<span> spans_;  // ranges cut at tensor boundaries
  std::size_t begin_ = 0, end_ = 0;
  optimizer_config t_;
  fbuffer m_, v_;
};

}  // namespace zf
