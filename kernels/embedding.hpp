#pragma once
// Embedding family: token + learned position embeddings (GPT-2), fp32. wpe / dwpe may be
// nullptr (models without learned positions, e.g. Llama's rotary ones).
#include <vector>

namespace zf::kernels {

// ids: [b, t]; wte: [vocab, c]; wpe: [max_pos, c] -> out: [b, t, c] = wte[ids] + wpe[pos0 + t].
// Caller guarantees 0 <= id < vocab and pos0 + t <= max_pos.
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0 = 0);

// dout: [b, t, c]. dwte, dwpe ACCUMULATED (+=).
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0 = 0);

// The backward's grouping of positions by token id, made on the host (the cuda twin sums each
// distinct id's rows in position order, as the cpu loop does, so both give the same bits):
// ids[u] is the u-th distinct id (ascending), its positions are order[starts[u] ..
// starts[u+1]) in increasing order. Vectors are reused across calls (no allocation once grown).
struct embedding_grad_plan {
  std::vector<int> ids, starts, order;
};
// ids: [count] host memory -> plan.
void plan_embedding_grad(const int* ids, int count, embedding_grad_plan& plan);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0);
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0);
}  // namespace cpu
// embedding_cuda.cu on the GPU (cuda) and run by the CPU simulation of CUDA (cuda_sim, tests).
namespace cuda {
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0);
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0);
}  // namespace cuda
namespace cuda_sim {
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0);
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0);
}  // namespace cuda_sim

}  // namespace zf::kernels
