#pragma once
// Activation family: GELU (tanh approximation, as GPT-2 and torch's GELU(approximate="tanh")),
// SwiGLU (Llama) and the residual add. fp32, element-wise.
#include <cstddef>
#include <cstdint>

namespace zf::kernels {

// y[i] = gelu(x[i]); y may alias x.
void gelu_forward(const float* x, float* y, std::size_t n);
// dx[i] = gelu'(x[i]) * dy[i] (OVERWRITTEN); dx may alias dy.
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n);
// y[i] = gelu(x[i]) rounded to bf16 (raw bits, nearest even): the activation a bf16 GEMM reads
// next, written without an fp32 copy (mixed-precision training keeps only this).
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n);
// y[i] = a[i] + b[i]; y may alias a or b.
void add_forward(const float* a, const float* b, float* y, std::size_t n);
// SwiGLU (Llama MLP): gu: [n, 2*m] rows of [gate | up] -> y: [n, m] with
// y = silu(gate) * up, silu(g) = g / (1 + exp(-g)). y may not alias gu.
void swiglu_forward(const float* gu, float* y, int n, int m);
// Backward of swiglu_forward. gu: [n, 2*m] as in the forward, dy: [n, m] -> dgu: [n, 2*m]
// OVERWRITTEN, d gate in columns [0, m) and d up in [m, 2m) of each row. dgu may alias gu (each
// element is read before it is written) but not dy.
void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m);
// y[i] += x[i]
void accumulate(float* y, const float* x, std::size_t n);
// y[r, :] += b for each of n rows of width c (a linear's bias after its GEMM).
void bias_add(float* y, const float* b, int n, int c);
// Memory moves on the current device (a model's buffers live there): y[i] = x[i] (y and x may
// not overlap) and y[i] = 0. On cuda, GPU memory and queued on the current stream
// (kernels/device.hpp's gpu_copy / gpu_zero).
void copy(float* y, const float* x, std::size_t n);
void clear(float* y, std::size_t n);
// y[i] = 0 over host memory, on both cores, whatever the current device (a gradient buffer cleared
// per step: 500 MB at GPT-2's size, which one core's memset clears at about half the machine's
// write bandwidth).
void zero_fill(float* y, std::size_t n);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void gelu_forward(const float* x, float* y, std::size_t n);
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n);
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n);
void add_forward(const float* a, const float* b, float* y, std::size_t n);
void swiglu_forward(const float* gu, float* y, int n, int m);
void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m);
void accumulate(float* y, const float* x, std::size_t n);
void bias_add(float* y, const float* b, int n, int c);
}  // namespace cpu
// activation_cuda.cu on the GPU (cuda) and run by the CPU simulation of CUDA (cuda_sim, tests).
// zero_fill has no twin: its contract is host memory; copy and clear are the device's own moves.
namespace cuda {
void gelu_forward(const float* x, float* y, std::size_t n);
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n);
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n);
void add_forward(const float* a, const float* b, float* y, std::size_t n);
void swiglu_forward(const float* gu, float* y, int n, int m);
void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m);
void accumulate(float* y, const float* x, std::size_t n);
void bias_add(float* y, const float* b, int n, int c);
}  // namespace cuda
namespace cuda_sim {
void gelu_forward(const float* x, float* y, std::size_t n);
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n);
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n);
void add_forward(const float* a, const float* b, float* y, std::size_t n);
void swiglu_forward(const float* gu, float* y, int n, int m);
void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m);
void accumulate(float* y, const float* x, std::size_t n);
void bias_add(float* y, const float* b, int n, int c);
}  // namespace cuda_sim

}  // namespace zf::kernels
