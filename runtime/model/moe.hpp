#pragma once
// The MoE MLP of a block (docs/moe.md has the math), shared by the train, score and paged modes as
// the rest of runtime/model/block is: router -> top-k gates -> capacity slots -> each expert's MLP
// (block::mlp_forward with the expert's tensors) over its tokens, gathered into one row block ->
// gated combine back into the residual stream. Rows are tokens: n rows, C = hidden, E = experts of
// the layer, k = top_k, Ie / Ue = an expert's intermediate / up width. Nothing here allocates:
// buffers come from the caller's arena (lay_out), sized for n rows once per shape.
#include <cstddef>
#include <vector>

#include "runtime/core/model_spec.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/model/block.hpp"

namespace zf::moe {

// One MoE layer's routing and saved activations for one forward of at most n rows.
struct layer_state {
  float *z = nullptr, *s = nullptr;                       // [n, E] router logits, scores
  float* gate = nullptr;                                  // [n, k]
  int *sel = nullptr, *slot = nullptr, *token = nullptr;  // [n, k], [n, k], [n k]
  int *offsets = nullptr, *counts = nullptr;              // [E + 1], [E]
  float* h = nullptr;    // [n k, Ue] experts' pre-activations, sorted rows (kept for backward)
  float* out = nullptr;  // [n k, C] experts' outputs, sorted rows (the gates' gradients read them)
  // The last forward's figures.
  int n = 0, rows = 0, dropped = 0;
  int counted = 0;        // rows counts[] are over: n, or the whole step's (routed over a group)
  bool parallel = false;  // routed over a group (moe_parallel): backward goes through it too
  // Router input jitter of this forward (set by the caller; 0 = none): row i's column c is
  // scaled by jitter_factor(jitter, jitter_seed, jitter_row0 + i, c).
  double jitter = 0;
  uint64_t jitter_seed = 0;
  int jitter_row0 = 0;
  double balance = 0, z_loss = 0, entropy = 0;  // entropy: mean router entropy (nats)
};

// A training step's routing figures per MoE layer, summed over its forward_backward calls (and,
// merged, over ranks): what the metrics report. pack / unpack carry it as plain doubles between
// actors.
struct step_stats {
  struct layer {
    int layer = 0;
    double forwards = 0, tokens = 0, dropped = 0;  // dropped: token choices past capacity
    double balance = 0, z_loss = 0, entropy = 0;   // summed over forwards
    std::vector<double> counts;                    // [E] choices per expert, before drops
  };
  std::vector<layer> layers;
  bool empty() const { return layers.empty(); }
  void add(const step_stats& o);  // layer by layer (the same model's); empty adds nothing
  std::vector<double> pack() const;
  static step_stats unpack(const std::vector<double>& v);
};

// Scratch shared by the layers of one model (one layer runs at a time).
struct scratch {
  float* xs = nullptr;     // [rows, C] gathered inputs (rows: n k by default)
  float* a = nullptr;      // [rows, Ie] activations
  float* dh = nullptr;     // [rows, Ue] (training)
  float* dout = nullptr;   // [rows, C] (training)
  float* ds = nullptr;     // [n, E max] (training)
  float* dgate = nullptr;  // [n k] (training)
  float* xj = nullptr;     // [n, C] the jittered router input (training with model.moe.jitter)
};

// Takes a layer's state for n rows from a (a counting arena counts), E its experts.
void lay_out(arena& a, const model_spec& s, int E, int n, layer_state& st);
// The scratch for n rows whose experts see at most `rows` token rows at once (0: n top_k).
void lay_out(arena& a, const model_spec& s, int n, bool train, scratch& sc, int rows = 0);
// The floats those takes count (each padded as arena::take pads), in double.
double state_floats(const model_spec& s, int E, int n);
double scratch_floats(const model_spec& s, int n, bool train, int rows = 0);

// An expert's capacity for n rows at a capacity factor: min(n, max(min_capacity, ceil(factor n k
// / E))); -1 (unlimited) when the spec is dropless or factor is 0 (the serving engine).
int capacity(const moe_spec& m, int n, int E, double factor);

// The spec block::mlp_forward / mlp_backward run an expert with (intermediate = Ie).
model_spec expert_spec(const model_spec& s);

// x [n, C] += the MoE MLP of ln2 [n, C] (w: the block's weights, w.moe set); cap from capacity().
// Fills st (routing, saved activations and the figures).
// figures false (serving): the balance, z-loss and entropy figures are not computed.
void forward(const model_spec& s, const model_spec& es, const block::weights& w, const float* ln2,
             int n, int cap, layer_state& st, const scratch& sc, float* x, bool figures = true);
// Backward of the last forward on the same ln2: d [n, C] = dL/dx -> dln2 [n, C] ACCUMULATED; the
// router's and experts' gradients ACCUMULATE into g. aux_scale multiplies the balance and z-loss
// gradients (their coefficients times the step's loss scale).
void backward(const model_spec& s, const model_spec& es, const block::weights& w,
              const block::grads& g, const float* ln2, const layer_state& st, const scratch& sc,
              const float* d, float aux_scale, float* dln2);

// Parts shared with runtime/model/moe_parallel: expert e's tensors as a block MLP's; the router
// (z, s, sel, gate of st for n rows); its backward from sc.dgate (the gates' gradients) with the
// auxiliary losses' into dln2 (ACCUMULATED) and g.moe.router_w.
block::weights expert(const moe_tensors<const float>& m, int e);
block::grads expert(const moe_tensors<float>& m, int e);
// ... with the block's quantized (bf16) projections of expert e when w carries them (serving).
block::weights expert(const block::weights& w, int e);
void route(const model_spec& s, const block::weights& w, const float* ln2, int n, layer_state& st,
           const scratch& sc);
void router_backward(const model_spec& s, const block::weights& w, const block::grads& g,
                     const float* ln2, const layer_state& st, const scratch& sc, float aux_scale,
                     float* dln2);
double mean_entropy(const float* s, int n, int E);  // of rows normalised to sum 1 (nats)

// Switch's router jitter: 1 + eps (2u - 1) with u uniform in [0, 1) drawn from (seed, row, col)
// alone, so a token's factors do not depend on which rank or batch position routes it.
float jitter_factor(double eps, uint64_t seed, int row, int col);

// DeepSeek-V3's auxiliary-loss-free update of one layer's routing bias from a step's loads
// (counts [E], the choices per expert): b[e] += rate * sign(mean load - counts[e]) for experts
// e0 <= e < e1, b pointing at expert e0's entry.
void update_router_bias(double rate, const std::vector<double>& counts, int e0, int e1, float* b);

}  // namespace zf::moe
