#pragma once
// Rotary position embedding (RoPE), Llama / Hugging Face "rotate_half" convention: within each
// head, dimension i < d/2 pairs with i + d/2 and both rotate by angle pos * inv_freq[i],
// inv_freq[i] = theta^(-2i/d) unless a rope scaling rescaled it (runtime/lm: rope_inv_freq).
namespace zf::kernels {

// cos/sin tables for positions [0, n_pos): inv_freq: [head_dim/2]; cos, sin: [n_pos, head_dim/2]
// (row p: cos(p * inv_freq[i])), the angles computed in double.
void rope_tables(int n_pos, int head_dim, const double* inv_freq, float* cos, float* sin);

// Rotates n_head heads of head_dim in each of n rows in place: x: [n, ld], row r at position
// pos[r]; head h occupies columns [h*head_dim, (h+1)*head_dim). cos/sin from rope_tables.
void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin);

// Backward of rope_forward, in place on the gradient dx: [n, ld] (same layout, positions and
// tables as the forward). The rotation is orthogonal, so its gradient is the inverse rotation
// (by -angle): dx1' = dx1 cos + dx2 sin, dx2' = dx2 cos - dx1 sin.
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void rope_tables(int n_pos, int head_dim, const double* inv_freq, float* cos, float* sin);
void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin);
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin);
}  // namespace cpu
// rope_cuda.cu on the GPU (cuda) and run by the CPU simulation of CUDA (cuda_sim, tests).
// rope_tables has no twin: the tables are made on the host once and copied.
namespace cuda {
void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin);
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin);
}  // namespace cuda
namespace cuda_sim {
void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin);
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin);
}  // namespace cuda_sim

}  // namespace zf::kernels
