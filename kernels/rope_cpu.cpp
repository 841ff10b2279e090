// RoPE, CPU: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin for the halves x1 = x[0, d/2),
// x2 = x[d/2, d) of each head; the backward applies the transpose (inverse) rotation. Element-wise,
// so the compiler vectorises the inner loop.
#include <cmath>
#include <cstddef>

#include "kernels/rope.hpp"

namespace zf::kernels::cpu {

// inv_freq: [head_dim/2]; cos, sin: [n_pos, head_dim/2]. HF computes inv_freq and the angles
// in fp32; double here is closer to the exact rotation and within fp32 tolerance of it.
void rope_tables(int n_pos, int head_dim, const double* inv_freq, float* cos, float* sin) {
  const int half = head_dim / 2;
  for (int p = 0; p < n_pos; ++p) {
    for (int i = 0; i < half; ++i) {
      const double a = p * inv_freq[i];
      cos[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::cos(a));
      sin[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

// x: [n, ld] in place; pos: [n].
void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int r = 0; r < n; ++r) {
    const float* c = cos + static_cast<std::size_t>(pos[r]) * half;
    const float* s = sin + static_cast<std::size_t>(pos[r]) * half;
    for (int h = 0; h < n_head; ++h) {
      float* x1 = x + static_cast<std::size_t>(r) * ld + static_cast<std::size_t>(h) * head_dim;
      float* x2 = x1 + half;
      for (int i = 0; i < half; ++i) {
        const float a = x1[i], b = x2[i];
        x1[i] = a * c[i] - b * s[i];
        x2[i] = b * c[i] + a * s[i];
      }
    }
  }
}

// dx: [n, ld] in place; pos: [n]. The forward is y = R x with R a rotation per pair, so
// dL/dx = R^T dL/dy: the same loop with the sign of sin flipped.
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int r = 0; r < n; ++r) {
    const float* c = cos + static_cast<std::size_t>(pos[r]) * half;
    const float* s = sin + static_cast<std::size_t>(pos[r]) * half;
    for (int h = 0; h < n_head; ++h) {
      float* d1 = dx + static_cast<std::size_t>(r) * ld + static_cast<std::size_t>(h) * head_dim;
      float* d2 = d1 + half;
      for (int i = 0; i < half; ++i) {
        const float a = d1[i], b = d2[i];
        d1[i] = a * c[i] + b * s[i];
        d2[i] = b * c[i] - a * s[i];
      }
    }
  }
}

}  // namespace zf::kernels::cpu
