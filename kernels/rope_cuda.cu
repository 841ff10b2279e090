// RoPE, CUDA twin of rope_cpu.cpp's rope_forward / rope_backward with the same contracts: x (or
// dx): [n, ld] GPU memory rotated in place, pos: [n] GPU memory, cos/sin: [n_pos, head_dim/2]
// GPU memory (rope_tables stays a host function: the tables are made once at load and copied).
// Invariants: one thread per rotated pair (row, head, i < head_dim/2), which reads both elements
// before writing them; columns outside the heads are untouched. The same products as the cpu
// loop (a few ulp apart where the compilers contract differently into FMAs).
#include "kernels/cuda_compat.cuh"  // first: the runtime or its CPU simulation
#include "kernels/rope.hpp"

namespace zf::kernels::ZF_CUDA_NS {
namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kMaxBlocks = 8192;

// sign +1: forward rotation by +angle; -1: the backward (inverse) rotation.
__global__ void rope_kernel(float* x, int ld, int n, const int* __restrict__ pos, int n_head,
                            int head_dim, const float* __restrict__ cos_t,
                            const float* __restrict__ sin_t, float sign) {
  const int half = head_dim / 2;
  const std::size_t total = static_cast<std::size_t>(n) * n_head * half;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int k = static_cast<int>(i % half);
    const std::size_t rh = i / half;
    const int h = static_cast<int>(rh % n_head);
    const std::size_t r = rh / n_head;
    const std::size_t t = static_cast<std::size_t>(pos[r]) * half + k;
    const float c = cos_t[t], s = sign * sin_t[t];
    float* x1 = x + r * ld + static_cast<std::size_t>(h) * head_dim + k;
    const float a = x1[0], b = x1[half];
    x1[0] = a * c - b * s;
    x1[half] = b * c + a * s;
  }
}

void launch(float* x, int ld, int n, const int* pos, int n_head, int head_dim, const float* cos,
            const float* sin, float sign, const char* what) {
  const std::size_t total = static_cast<std::size_t>(n) * n_head * (head_dim / 2);
  if (total == 0) return;
  ZF_LAUNCH(rope_kernel, grid_for(total, kBlock, kMaxBlocks), kBlock, 0)
  (x, ld, n, pos, n_head, head_dim, cos, sin, sign);
  check_launch(what);
}

}  // namespace

void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin) {
  launch(x, ld, n, pos, n_head, head_dim, cos, sin, 1.0f, "rope_forward launch");
}

// The inverse rotation: x1' = a c + b s, x2' = b c - a s (sin negated).
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin) {
  launch(dx, ld, n, pos, n_head, head_dim, cos, sin, -1.0f, "rope_backward launch");
}

}  // namespace zf::kernels::ZF_CUDA_NS
