#pragma once
// Quantizing a whole model (issue 14): every block's four projections and, unless kept, the LM
// head, into one of the schemes below, by round-to-nearest or GPTQ, with optional LoRC.
// Embeddings, norms and biases stay fp32.
//   w8a8      int8 symmetric weights per group (default 128), int8 per-token activations
//   w4a16     int4 asymmetric weights per group (default 128) with zero points, fp32 activations
//   fp8       FP8 E4M3 weights, one scale per output channel      (fp8_e5m2: E5M2)
//   fp6       FP6 E3M2 weights, one scale per output channel (FP6-LLM)
//   fp4       FP4 E2M1 weights per group (default 128), power-of-two scales (ZeroQuant-FP)
// GPTQ runs layer by layer as the paper does: layer l's Hessians come from calibration windows
// run through the model with layers 0..l-1 already quantized (the block's observer), so each
// layer corrects for the error of those before it; the head last, under the quantized blocks.
// LKD (runtime/quant/lkd) then trains the layer's quantized weights to reproduce the float
// layer's output on those same inputs, and LoRC, last, corrects the final quantization error.
// The calibration windows' hidden states are kept between layers: entering layer l + 1 they are
// layer l's quantized output on those entering it (one block forward per layer, not a forward of
// the whole model per layer).
#include <memory>
#include <string>
#include <vector>

#include "kernels/quant.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/model/quant_linear.hpp"
#include "runtime/quant/gptq.hpp"

namespace zf::quant {

struct scheme {
  std::string name;
  kernels::qformat fmt = kernels::qformat::int8;
  int group = 0;  // inputs per scale; 0: one scale per output channel
  bool asym = false, pow2 = false, act_int8 = false;
};

// The scheme `name` with its default group, or group_size (> 0) instead of it. zf::error naming
// `option` (e.g. "--scheme") and the known schemes for an unknown name.
scheme scheme_named(const std::string& name, int group_size = 0,
                    const std::string& option = "--scheme");
const std::vector<std::string>& scheme_names();

struct quantize_options {
  scheme s;
  std::string method = "rtn";  // rtn | gptq
  int lorc_rank = 0;           // > 0: LoRC of that rank on every quantized matrix
  bool head = true;            // quantize the LM head too
  gptq_options gptq;
  // LKD (runtime/quant/lkd.hpp): > 0 Adam steps per layer (needs calibration). lkd_lr: the peak
  // learning rate, decayed to 0 by a cosine. 1e-4: Adam moves a weight by about lr per step and
  // a layer's int4 grid step is ~0.01-0.02 (group range / 15), so ~50-100 steps carry a weight
  // across half a step: a few hundred steps re-round the weights the loss cares about without
  // drifting whole groups. On test_lkd's models it gave the best held-out error of 5e-5..5e-4;
  // 5e-4 fits the calibration windows as well but gains less (or nothing) on others.
  int lkd_steps = 0;
  float lkd_lr = 1e-4f;
  int lkd_windows = 4;  // calibration windows per LKD step
};

// What quantize_model measured: per layer, LKD's block output MSE against the float block's on
// the calibration windows before and after (empty without LKD).
struct quantize_report {
  struct layer {
    double mse_before = 0, mse_after = 0;
    bool improved = false;  // false: LKD did not lower it and the first quantization was kept
  };
  std::vector<layer> lkd;
};

// Calibration windows for GPTQ and LKD: ids [windows, t].
struct calibration {
  std::vector<int> ids;
  int windows = 0, t = 0;
};

// `windows` windows of t tokens spread evenly over ids (all of them when ids is shorter than
// windows * t, fewer windows when shorter than that). zf::error naming `what` when ids has
// fewer than t + 1 tokens.
calibration calibration_windows(const std::vector<int>& ids, int windows, int t,
                                const std::string& what);

// The quantized linears of the model (spec, flat fp32 parameters in the canonical layout).
// GPTQ and LKD need cal (zf::error naming --method gptq / --lkd-steps when it is null or empty).
// zf::error naming the group size when it does not divide a layer's input width, or a method
// other than rtn / gptq. report (optional) receives LKD's per-layer errors.
std::shared_ptr<lm_quant> quantize_model(const model_spec& spec, const float* flat,
                                         const quantize_options& o, const calibration* cal,
                                         quantize_report* report = nullptr);

}  // namespace zf::quant
