#pragma once
// AdamW over a slice of the flat parameter buffer (an optimizer shard owns [begin, end) of it),
// the warm-up + cosine learning-rate schedule and global-norm gradient clipping.
// Semantics equal torch.optim.AdamW with two param groups (decay on matrices and embeddings,
// none on biases and LayerNorm) and torch.nn.utils.clip_grad_norm_.
#include <cstddef>

#include "runtime/config.hpp"
#include "runtime/model.hpp"
#include "runtime/tensor.hpp"

namespace zf {

// lr at 0-based step s: linear warm-up to lr over `warmup` steps, then cosine to lr*min_ratio.
double lr_at(const train_config& t, int step);

// clip_grad_norm_'s coefficient: min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0.
float clip_coefficient(double norm, double max_norm);

class adamw {
 public:
  // Owns moments for parameters [begin, end) of layout (in floats).
  adamw(const param_layout& layout, std::size_t begin, std::size_t end, const train_config& t);

  // One update of params[begin, end) with grads[begin, end) scaled by grad_scale; step is the
  // 1-based optimizer step (bias correction).
  void step(float* params, const float* grads, double lr, int step, float grad_scale);

  fbuffer& m() { return m_; }
  fbuffer& v() { return v_; }
  std::size_t begin() const { return begin_; }
  std::size_t end() const { return end_; }

 private:
  struct span {
    std::size_t begin, end;  // absolute, in floats
    bool decay;
  };
  std::vector<span> spans_;  // the layout's tensors clipped to [begin, end)
  std::size_t begin_, end_;
  train_config t_;
  fbuffer m_, v_;
};

}  // namespace zf
