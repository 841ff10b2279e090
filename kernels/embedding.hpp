#pragma once
// Embedding family: token + learned position embeddings (GPT-2), fp32. wpe / dwpe may be
// nullptr (models without learned positions, e.g. Llama's rotary ones).

namespace zf::kernels {

// ids: [b, t]; wte: [vocab, c]; wpe: [max_pos, c] -> out: [b, t, c] = wte[ids] + wpe[pos0 + t].
// Caller guarantees 0 <= id < vocab and pos0 + t <= max_pos.
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0 = 0);

// dout: [b, t, c]. dwte, dwpe ACCUMULATED (+=).
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0 = 0);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0);
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0);
}  // namespace cpu

}  // namespace zf::kernels
