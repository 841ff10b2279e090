#pragma once
// Softmax + cross-entropy family, fp32, numerically stable (max-subtracted; the CPU reference
// sums each row's exps in double).

namespace zf::kernels {

// Fused training kernel. logits: [n, v], targets: [n], loss: [n]. For each row r: loss[r] = logsumexp(logits[r]) - logits[r][targets[r]], and, in place,
// logits[r] becomes dlogits[r] = (softmax(logits[r]) - onehot(targets[r])) * dloss.
// Rows whose target is negative are ignored: loss 0 and a zero gradient row.
// Fusing forward and backward in place is why a training step never holds logits and their
// gradient at once (the largest activation at vocab 50257).
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss);

// Forward only, logits unchanged: loss[r] as above (evaluation).
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v);

// In-place row softmax of x: [n, v] with an optional scale applied first (x*scale).
void softmax_rows(float* x, int n, int v, float scale = 1.0f);

}  // namespace zf::kernels
