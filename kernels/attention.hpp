#pragma once
// Attention family: causal multi-head self-attention, fp32, written as per-head GEMMs (OpenBLAS).
// One kernel serves training (tq == tk, offset 0) and KV-cached decoding (tq new queries at
// absolute positions offset..offset+tq-1 against tk = offset+tq cached keys).
// Layout: rows are positions; a head h occupies columns [h*hd, (h+1)*hd) of each row, so q/k/v
// can point straight into the fused c_attn output [t, 3C] with row stride 3C (no copies).

namespace zf::kernels {

struct attention_shape {
  int tq = 0;      // query rows
  int tk = 0;      // key/value rows (tk = offset + tq)
  int offset = 0;  // absolute position of query row 0; query i sees keys 0..offset+i
  int n_head = 0;
  int head_dim = 0;
  int ldq = 0, ldk = 0, ldv = 0, ldo = 0;  // row strides in floats
  // Grouped-query attention (Llama): number of key/value heads; 0 means n_head (plain multi-head).
  // n_head must be a multiple of it. Query head h reads kv head h / (n_head / n_kv_head), whose
  // columns in k and v are [g*head_dim, (g+1)*head_dim). Last, so that existing positional and
  // designated initialisers keep their meaning.
  int n_kv_head = 0;
};

// q: [tq, ldq] (n_head heads), k: [tk, ldk], v: [tk, ldv] (n_kv_head heads each) -> out:
// [tq, ldo] (the C = n_head*head_dim columns overwritten). att: [n_head, tq, tk] scratch that
// receives the softmax probabilities (saved for backward; masked entries are exactly 0). Scale is
// 1/sqrt(head_dim).
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att);

// Backward of attention_forward for one sequence. dout: [tq, ldo]. att: probabilities from the
// forward. datt: [n_head, tq, tk] scratch. dq/dk/dv (same strides as q/k/v) OVERWRITTEN in their
// head columns; with GQA each kv head's dk/dv is the sum over the query heads of its group.
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv);

// Backends (kernels/dispatch.cpp picks one per call), same contracts as above.
namespace cpu {
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att);
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv);
}  // namespace cpu
// kernels/attention_cuda.cu: GPU pointers, queued on the current stream (nothing waits).
namespace cuda {
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att);
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv);
}  // namespace cuda
// attention_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp; tests), host pointers.
namespace cuda_sim {
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att);
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv);
}  // namespace cuda_sim

}  // namespace zf::kernels
