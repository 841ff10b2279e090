#pragma once
// Norm family: LayerNorm (GPT-2) and RMSNorm (Llama) over the last dimension, fp32, forward and
// backward.

namespace zf::kernels {

// x: [n, c], gamma/beta: [c] -> y: [n, c] (overwritten); mean, rstd: [n] saved for backward.
// y may not alias x. mean/rstd may be nullptr (inference).
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps = 1e-5f);

// dy: [n, c]. dx: [n, c] ACCUMULATED (+=, it is the residual stream's gradient);
// dgamma, dbeta: [c] ACCUMULATED.
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c);

// RMSNorm (Llama): y = x * rsqrt(mean(x^2) + eps) * gamma. x: [n, c], gamma: [c] -> y: [n, c]
// (overwritten; y may not alias x). rstd: [n] receives rsqrt(mean(x^2) + eps) for backward and
// may be nullptr (inference); y is bit-identical either way.
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps);
// Inference form: rmsnorm_forward(x, gamma, y, nullptr, n, c, eps).
void rmsnorm_forward(const float* x, const float* gamma, float* y, int n, int c, float eps);

// Backward of rmsnorm_forward. x, dy: [n, c]; gamma: [c]; rstd: [n] from the forward.
// dx: [n, c] ACCUMULATED (+=, the residual stream's gradient); dgamma: [c] ACCUMULATED.
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps);
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c);
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps);
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c);
}  // namespace cpu
// kernels/norm_cuda.cu: GPU pointers, queued on the thread's stream (cuda_compat.cuh), nothing
// waits. The backwards' dgamma/dbeta column sums are deterministic (per-chunk partials summed in
// a fixed order), not atomics.
namespace cuda {
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps);
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c);
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps);
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c);
}  // namespace cuda
// norm_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp; tests), host pointers.
namespace cuda_sim {
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps);
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c);
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps);
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c);
}  // namespace cuda_sim

}  // namespace zf::kernels
