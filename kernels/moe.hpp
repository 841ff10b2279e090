#pragma once
// Mixture-of-Experts routing family (docs/moe.md has the math): router scores, top-k gates,
// capacity slots (which expert row each token choice lands in), gathering tokens into per-expert
// row blocks and combining the experts' outputs back, the auxiliary losses, and the backward of
// each. Rows are tokens: n rows, E experts, k choices per token, C = hidden. The experts' own
// GEMMs are the matmul family's. Integer outputs are plain arrays the caller sizes.

namespace zf::kernels {

// s [n, E] = softmax of each row of the router logits z [n, E] (sigmoid = false: max-subtracted,
// the sum kept in double) or the elementwise sigmoid.
void router_scores(const float* z, float* s, int n, int E, bool sigmoid);
// ds [n, E] -> dz [n, E] OVERWRITTEN (dz may be ds): softmax dz = s * (ds - sum_e ds * s);
// sigmoid dz = ds * s * (1 - s).
void router_scores_backward(const float* s, const float* ds, float* dz, int n, int E, bool sigmoid);

// For each row i: sel [n, k] the k experts with the largest s[i, e] + bias[e] (bias [E] or null),
// in descending order, ties to the lower expert; gate [n, k] = s[i, sel[i, j]], divided by their
// sum over j when normalize.
void topk_gates(const float* s, const float* bias, int n, int E, int k, bool normalize, int* sel,
                float* gate);
// dgate [n, k] -> ds [n, E] ACCUMULATED (only the selected columns receive gradient).
void topk_gates_backward(const float* s, const int* sel, const float* dgate, int n, int E, int k,
                         bool normalize, float* ds);

// Slots: the n*k choices in priority order (j = 0..k-1, then i = 0..n-1) fill their expert up to
// capacity (capacity < 0: unlimited). slot [n, k] = the choice's row in the expert-sorted buffer
// (-1 when dropped); offsets [E+1]: expert e's rows are [offsets[e], offsets[e+1]), in priority
// order; token [n*k]: the token of each sorted row; counts [E]: choices of each expert before
// any drop. Returns the kept rows (offsets[E]); the dropped choices are n*k minus that.
int moe_assign_slots(const int* sel, int n, int E, int k, int capacity, int* slot, int* offsets,
                     int* token, int* counts);

// dst [m, C]: row r = x [token[r]] (token [m]).
void moe_gather(const float* x, const int* token, int m, int C, float* dst);
// y [n, C] += sum over j in order of gate[i, j] * out[slot[i, j]] (kept choices only).
void moe_combine(const float* out, const int* slot, const float* gate, int n, int k, int C,
                 float* y);
// Backward of moe_combine for d = dy [n, C]: dout [rows, C] row slot[i, j] = gate[i, j] * d[i]
// (OVERWRITTEN), dgate [n, k] = d[i] . out[slot[i, j]] (0 for a dropped choice, OVERWRITTEN).
void moe_combine_backward(const float* out, const int* slot, const float* gate, const float* d,
                          int n, int k, int C, float* dout, float* dgate);
// dx [n, C] += sum over kept j in order of dxs [slot[i, j]] (the gathered rows' gradients back
// to their tokens).
void moe_scatter_add(const float* dxs, const int* slot, int n, int k, int C, float* dx);

// Switch balance loss E * sum_e f_e P_e with f_e = counts[e] / (counted k) and P_e = mean_i
// s[i, e] over the n rows of s; with ds non-null, ds [n, E] += coef * dL/ds = coef * E f_e / n.
// counted: the rows the counts are over (n, or a whole data-parallel step's rows when the
// counts are the step's: then each rank's share of the gradient uses its own n).
double moe_balance_loss(const float* s, const int* counts, int n, int counted, int E, int k,
                        float* ds, float coef);
// Router z-loss mean_i (logsumexp_e z[i, e])^2; with dz non-null, dz [n, E] += coef * dL/dz =
// coef * 2 lse_i softmax(z_i)_e / n.
double moe_z_loss(const float* z, int n, int E, float* dz, float coef);

namespace cpu {
void router_scores(const float* z, float* s, int n, int E, bool sigmoid);
void router_scores_backward(const float* s, const float* ds, float* dz, int n, int E, bool sigmoid);
void topk_gates(const float* s, const float* bias, int n, int E, int k, bool normalize, int* sel,
                float* gate);
void topk_gates_backward(const float* s, const int* sel, const float* dgate, int n, int E, int k,
                         bool normalize, float* ds);
int moe_assign_slots(const int* sel, int n, int E, int k, int capacity, int* slot, int* offsets,
                     int* token, int* counts);
void moe_gather(const float* x, const int* token, int m, int C, float* dst);
void moe_combine(const float* out, const int* slot, const float* gate, int n, int k, int C,
                 float* y);
void moe_combine_backward(const float* out, const int* slot, const float* gate, const float* d,
                          int n, int k, int C, float* dout, float* dgate);
void moe_scatter_add(const float* dxs, const int* slot, int n, int k, int C, float* dx);
double moe_balance_loss(const float* s, const int* counts, int n, int counted, int E, int k,
                        float* ds, float coef);
double moe_z_loss(const float* z, int n, int E, float* dz, float coef);
}  // namespace cpu

}  // namespace zf::kernels
