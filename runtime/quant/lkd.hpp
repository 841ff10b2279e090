#pragma once
// Layer-by-layer knowledge distillation (LKD, ZeroQuant arXiv 2206.01861 section 4), our own
// implementation from the paper: once a layer is quantized, its four projections' float master
// weights (qkv, o, up, down) are trained so that the block with quantized weights reproduces the
// FLOAT block's output on the same input,
//   loss = mean over rows and channels of (block_l(X; Q(W')) - block_l(X; W))^2,
// X the hidden states entering layer l in the model whose layers 0..l-1 are already quantized
// (calibration windows), W the float weights, W' the masters. The forward fake-quantizes
// (quantize -> dequantize on the layer's own scales and zeros, which stay fixed); the backward is
// the straight-through estimator: the gradient w.r.t. the dequantized weight updates the master
// (Adam). Biases and norms are not trained (ZeroQuant trains the quantized weights only), nor is
// the LM head. W8A8's int8 activations are not simulated: the loss sees weight quantization only.
// The block forward and backward are the train mode's own (transformer:: block_forward_alone on a
// one-layer transformer holding just this block).
#include <memory>
#include <vector>

#include "runtime/core/model_spec.hpp"
#include "runtime/model/layout.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/quant_linear.hpp"

namespace zf::quant {

// One block of a model run alone on hidden states [b*t, C]: a one-layer transformer of the
// model's spec whose block region (parameters and gradients) is held here. Region offsets of a
// block are the same in every layer, so any layer of the full layout loads into it.
class layer_runner {
 public:
  explicit layer_runner(const model_spec& s);
  // Copies block l of flat (the model's full layout) into the runner's region.
  void load(const float* flat, int l);
  block_tensors<float> weights();  // the region's tensors (layout shapes)
  block_tensors<float> grads();
  void zero_grad();
  // The projections q (null: the region's fp32 ones) in forward; biases and norms from the
  // region either way. q must outlive its use.
  void set_quant(const block_quant* q);
  // Sees the block's projection inputs as transformer::linear_observer does, as layer 0.
  void set_observer(transformer::linear_observer* o) { m_->set_observer(o); }
  // x [b*t, C] -> out [b*t, C] (out may be x when no backward follows); backward: d [b*t, C]
  // d(out) in, d(x) out, weight gradients accumulated into grads().
  void forward(const float* x, int b, int t, float* out) {
    m_->block_forward_alone(0, x, b, t, out);
  }
  void backward(const float* x, int b, int t, float* d) { m_->block_backward_alone(0, x, b, t, d); }
  const model_spec& spec() const { return m_->spec(); }

 private:
  struct access : region_access {
    float* buf = nullptr;
    float* acquire(int region) override;
    void release(int) override {}
  };
  param_layout full_;
  std::unique_ptr<transformer> m_;
  std::vector<float> p_, g_;
  access pa_, ga_;
  std::shared_ptr<lm_quant> one_;  // one block's views, for set_quant
};

struct lkd_options {
  int steps = 0;     // Adam steps
  float lr = 1e-4f;  // peak learning rate (cosine decay to 0 over the steps)
  int windows = 4;   // calibration windows per step (cycling through all of them)
};

// Output MSE of the block against the float block's over every calibration window.
struct lkd_report {
  double mse_before = 0;  // the quantization LKD started from
  double mse_after = 0;   // after LKD (the better of the two is kept)
  bool improved = false;  // false: the starting quantization was kept
};

// LKD of one layer. run holds block l's fp32 weights (layer_runner::load; its projection
// matrices are overwritten); x [windows*t, C]: the hidden states entering the layer; y
// [windows*t, C]: the float block's output on them; q[4]: the layer's qkv, o, up, down quantized
// without LoRC (RTN or GPTQ), re-rounded in place from the trained masters on their own scales and
// zeros; init[4]: the masters' starting values ([k, n], the model's layout), for which q's codes
// must be round-to-nearest on those scales (the float weights for RTN, the dequantized weights
// for GPTQ).
lkd_report lkd_layer(layer_runner& run, const float* x, const float* y, int windows, int t,
                     quant_linear* const q[4], const float* const init[4], const lkd_options& o);

}  // namespace zf::quant
