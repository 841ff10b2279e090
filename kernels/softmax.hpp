#pragma once
// Softmax + cross-entropy family, fp32, numerically stable (max-subtracted; the CPU reference
// sums each row's exps in double).

namespace zf::kernels {

// Fused training kernel. logits: [n, v], targets: [n], loss: [n]. For each row r: loss[r] =
// logsumexp(logits[r]) - logits[r][targets[r]], and, in place, logits[r] becomes dlogits[r] =
// (softmax(logits[r]) - onehot(targets[r])) * dloss. Rows whose target is negative are ignored:
// loss 0 and a zero gradient row. Fusing forward and backward in place is why a training step never
// holds logits and their gradient at once (the largest activation at vocab 50257).
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss);

// Forward only, logits unchanged: loss[r] as above (evaluation).
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v);

// In-place row softmax of x: [n, v] with an optional scale applied first (x*scale).
void softmax_rows(float* x, int n, int v, float scale = 1.0f);
// log(sum_i exp(x[i])) over x: [n], max-subtracted, the sum kept in double; x[t] - log_sum_exp
// is log_softmax(x)[t]. The one log-softmax: serving's logprobs and score mode both use it, so
// their numbers agree bit for bit.
double log_sum_exp(const float* x, int n);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss);
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v);
void softmax_rows(float* x, int n, int v, float scale);
double log_sum_exp(const float* x, int n);
}  // namespace cpu
// kernels/softmax_cuda.cu: GPU pointers, queued on the thread's stream (cuda_compat.cuh); only
// log_sum_exp waits (it returns a host double).
namespace cuda {
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss);
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v);
void softmax_rows(float* x, int n, int v, float scale);
double log_sum_exp(const float* x, int n);
}  // namespace cuda
// softmax_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp; tests), host pointers.
namespace cuda_sim {
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss);
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v);
void softmax_rows(float* x, int n, int v, float scale);
double log_sum_exp(const float* x, int n);
}  // namespace cuda_sim

}  // namespace zf::kernels
