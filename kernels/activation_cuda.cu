// Activation family, CUDA twin of activation_cpu.cpp with the same contracts: GELU (tanh
// approximation, in the cpu kernel's cancellation-free form x / (1 + exp(-2u))), SwiGLU, residual
// adds. Pointers are GPU memory; work is queued on current_stream() and not waited for.
// Invariants: element-wise grid-stride loops over n (any size_t), each element read before it is
// written (the aliasing the contracts allow holds). The same formulas as the cpu kernel with
// expf in place of its polynomial: results agree to a few ulp. zero_fill has no twin: its
// contract is host memory whatever the device.
#include <cmath>

#include "kernels/activation.hpp"
#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kMaxBlocks = 8192;
constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kKappa = 0.044715f;

ZF_HD float gelu_of(float x) {
  const float z = (x + kKappa * (x * x * x)) * (-2.0f * kBeta);  // -2u
  return x / (1.0f + expf(z));
}

// As activation_cpu.cpp's gelu_grad8: 0 beyond -2u > 80, s alone where exp(-2u) underflows.
ZF_HD float gelu_grad_of(float x) {
  const float x2 = x * x;
  const float z = (x + kKappa * (x2 * x)) * (-2.0f * kBeta);
  if (z > 80.0f) return 0.0f;
  const float e = expf(z);
  const float s = 1.0f / (1.0f + e);
  if (e == 0.0f) return s;
  return s + (2.0f * kBeta) * x * (1.0f + (3.0f * kKappa) * x2) * (e * s * s);
}

__global__ void gelu_kernel(const float* x, float* y, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] = gelu_of(x[i]);
  }
}

__global__ void gelu_bf16_kernel(const float* __restrict__ x, std::uint16_t* __restrict__ y,
                                 std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] = f32_to_bf16(gelu_of(x[i]));
  }
}

__global__ void gelu_backward_kernel(const float* x, const float* dy, float* dx, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dx[i] = gelu_grad_of(x[i]) * dy[i];
  }
}

// y = a + b (accumulate: a = y, b = x).
__global__ void add_kernel(const float* a, const float* b, float* y, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] = a[i] + b[i];
  }
}

// y [rows, c] += b [c]; one thread per element.
__global__ void bias_add_kernel(float* y, const float* __restrict__ b, std::size_t total,
                                std::size_t c) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    y[i] += b[i % c];
  }
}

// gu: [n, 2m] rows [gate | up] -> y: [n, m]; one thread per output element.
__global__ void swiglu_kernel(const float* __restrict__ gu, float* __restrict__ y, std::size_t n,
                              std::size_t m) {
  const std::size_t total = n * m, stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const std::size_t r = i / m, j = i % m;
    const float g = gu[r * 2 * m + j], u = gu[r * 2 * m + m + j];
    y[i] = g / (1.0f + expf(-g)) * u;
  }
}

// As activation_cpu.cpp's swiglu_grad8; dgu may alias gu: both inputs of an element are read by
// the thread that writes its two outputs.
__global__ void swiglu_backward_kernel(const float* gu, const float* __restrict__ dy, float* dgu,
                                       std::size_t n, std::size_t m) {
  const std::size_t total = n * m, stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const std::size_t r = i / m, j = i % m;
    const float g = gu[r * 2 * m + j], u = gu[r * 2 * m + m + j], d = dy[i];
    const float e = expf(-g);
    const float s = 1.0f / (1.0f + e);
    const float grad = g < -80.0f ? 0.0f : (e == 0.0f ? 1.0f : s * (1.0f + g * (e * s)));
    dgu[r * 2 * m + j] = d * u * grad;
    dgu[r * 2 * m + m + j] = d * (g / (1.0f + e));
  }
}

unsigned blocks_for(std::size_t n) {
  return grid_for(n, kBlock, kMaxBlocks);
}

}  // namespace

// x: [n] -> y: [n]; y may alias x.
void gelu_forward(const float* x, float* y, std::size_t n) {
  if (n == 0) return;
  ZF_LAUNCH(gelu_kernel, blocks_for(n), kBlock, 0)(x, y, n);
  check_launch("gelu_forward launch");
}

// x: [n] -> y: [n] bf16 bits.
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n) {
  if (n == 0) return;
  ZF_LAUNCH(gelu_bf16_kernel, blocks_for(n), kBlock, 0)(x, y, n);
  check_launch("gelu_forward_bf16 launch");
}

// x, dy: [n] -> dx: [n] overwritten; dx may alias dy.
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n) {
  if (n == 0) return;
  ZF_LAUNCH(gelu_backward_kernel, blocks_for(n), kBlock, 0)(x, dy, dx, n);
  check_launch("gelu_backward launch");
}

void add_forward(const float* a, const float* b, float* y, std::size_t n) {
  if (n == 0) return;
  ZF_LAUNCH(add_kernel, blocks_for(n), kBlock, 0)(a, b, y, n);
  check_launch("add_forward launch");
}

void accumulate(float* y, const float* x, std::size_t n) {
  if (n == 0) return;
  ZF_LAUNCH(add_kernel, blocks_for(n), kBlock, 0)(y, x, y, n);
  check_launch("accumulate launch");
}

void bias_add(float* y, const float* b, int n, int c) {
  const std::size_t total = static_cast<std::size_t>(n) * static_cast<std::size_t>(c);
  if (total == 0) return;
  ZF_LAUNCH(bias_add_kernel, blocks_for(total), kBlock, 0)(y, b, total, std::size_t(c));
  check_launch("bias_add launch");
}

void swiglu_forward(const float* gu, float* y, int n, int m) {
  const std::size_t total = static_cast<std::size_t>(n) * static_cast<std::size_t>(m);
  if (total == 0) return;
  ZF_LAUNCH(swiglu_kernel, blocks_for(total), kBlock, 0)
  (gu, y, static_cast<std::size_t>(n), static_cast<std::size_t>(m));
  check_launch("swiglu_forward launch");
}

void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m) {
  const std::size_t total = static_cast<std::size_t>(n) * static_cast<std::size_t>(m);
  if (total == 0) return;
  ZF_LAUNCH(swiglu_backward_kernel, blocks_for(total), kBlock, 0)
  (gu, dy, dgu, static_cast<std::size_t>(n), static_cast<std::size_t>(m));
  check_launch("swiglu_backward launch");
}

}  // namespace zf::kernels::ZF_CUDA_NS
