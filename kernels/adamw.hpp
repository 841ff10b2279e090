#pragma once
// AdamW family (decoupled weight decay, PyTorch torch.optim.AdamW semantics), fp32.
#include <cstddef>

namespace zf::kernels {

struct adamw_params {
  float lr = 3e-4f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.0f;  // applied as p -= lr * wd * p before the Adam update
  int step = 1;               // 1-based step count for bias correction
  float grad_scale = 1.0f;    // multiplies g first (gradient clipping, accumulation averaging)
};

// p, m, v: [n] updated in place; g: [n] read only.
// m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; p -= lr*wd*p;
// p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps), with g' = g * grad_scale.
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n, const adamw_params& a);

// sum of squares of x[0..n) accumulated in double (global gradient norm for clipping).
double sum_squares(const float* x, std::size_t n);

// The per-step scalars of adamw_step, computed once on the host so every backend applies the
// same floats (torch's single-tensor formulation, see adamw_cpu.cpp):
//   g' = g * grad_scale; p *= decay; m = c1 * (g' - m) + (small ? m : g');
//   v = v * b2 + w2 * g' * g'; p += neg_step * m / (sqrt(v) / bc2_sqrt + eps).
struct adamw_coefficients {
  float decay, c1, b2, w2, neg_step, bc2_sqrt, eps, grad_scale;
  bool small;  // |1 - beta1| < 0.5: torch's lerp form m + w (g - m), else g - (1 - w) (g - m)
};
adamw_coefficients adamw_coefficients_of(const adamw_params& a);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above. The cuda ones take
// GPU pointers, run on the default stream and return once the work is queued (sum_squares waits
// for its result).
namespace cpu {
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n, const adamw_params& a);
double sum_squares(const float* x, std::size_t n);
}  // namespace cpu
namespace cuda {
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n, const adamw_params& a);
double sum_squares(const float* x, std::size_t n);
}  // namespace cuda
// adamw_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp; tests), host pointers.
namespace cuda_sim {
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n, const adamw_params& a);
double sum_squares(const float* x, std::size_t n);
}  // namespace cuda_sim

}  // namespace zf::kernels
