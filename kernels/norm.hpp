#pragma once
// Norm family: LayerNorm over the last dimension (GPT-2), fp32.

namespace zf::kernels {

// x: [n, c], gamma/beta: [c] -> y: [n, c] (overwritten); mean, rstd: [n] saved for backward.
// y may not alias x. mean/rstd may be nullptr (inference).
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps = 1e-5f);

// dy: [n, c]. dx: [n, c] ACCUMULATED (+=, it is the residual stream's gradient);
// dgamma, dbeta: [c] ACCUMULATED.
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c);

}  // namespace zf::kernels
