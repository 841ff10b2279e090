#pragma once
// The optimizer step every RL-side training loop shares (SFT, reward model, policy and critic
// updates): AdamW over a whole model's flat parameters, the gradient's global norm clipped to
// optimizer.grad_clip, and for the fixed-length loops a warm-up (a tenth of the steps) + cosine
// schedule.
#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"
#include "runtime/train/optim.hpp"

namespace zf::rl {

// sqrt(sum g^2) over m.grads(), in double.
double grad_norm(transformer& m);
// One AdamW step of opt (which owns m's whole flat range) at lr, `step` 1-based; returns the
// gradient norm before clipping.
double clipped_step(transformer& m, adamw& opt, double clip, double lr, int step);

// AdamW for a fixed number of steps: peak lr `lr` after a warm-up of a tenth of them, cosine to
// optimizer.min_lr_ratio's default (runtime/train/optim's lr_at).
class scheduled_adamw {
 public:
  scheduled_adamw(transformer& m, const optimizer_config& opt, double lr, int steps);
  // After the gradients of step s (0-based) are in m.grads().
  double step(int s);

 private:
  transformer& m_;
  optimizer_config oc_;
  schedule_config sc_;
  int steps_;
  adamw opt_;
};

}  // namespace zf::rl
