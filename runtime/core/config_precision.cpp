// Mixed precision's keys (issue 16): train.precision and fp16's loss scaling (train.fp16.*, the
// names and defaults of DeepSpeed's fp16 section).
#include "runtime/core/config_keys.hpp"
#include "runtime/core/error.hpp"

namespace zf::config_detail {

std::vector<key> precision_keys() {
  return {
      ZF_ENUM("train.precision", train.precision,
              "GEMM compute precision: fp32, or bf16 / fp16 mixed precision (fp32 master "
              "weights, gradients and Adam moments; fp16 with loss scaling)",
              "fp32", "bf16", "fp16"),
      ZF_ENUM("train.reduce_dtype", train.reduce_dtype,
              "dtype gradients travel and are summed in between data-parallel ranks: fp32, or "
              "bf16 (half the bytes; each rank's gradient rounded to bf16, the sum a bf16 value)",
              "fp32", "bf16"),
      ZF_ENUM("train.device", train.device,
              "where the ranks train: cpu, or cuda (model, gradients and AdamW state in GPU "
              "memory; one rank at zero.stage 0 for now)",
              "cpu", "cuda"),
      ZF_NUM("train.fp16.loss_scale", train.fp16.loss_scale, 0, 1e30,
             "fp16: a fixed loss scale; 0 = dynamic loss scaling"),
      ZF_INT("train.fp16.initial_scale_power", train.fp16.initial_scale_power, 0, 64,
             "fp16 dynamic scaling: the first scale is 2^this"),
      ZF_INT("train.fp16.loss_scale_window", train.fp16.loss_scale_window, 1, 1e9,
             "fp16 dynamic scaling: steps without overflow before the scale doubles"),
      ZF_INT("train.fp16.hysteresis", train.fp16.hysteresis, 1, 1e6,
             "fp16 dynamic scaling: overflows the scale survives before it halves"),
      ZF_NUM("train.fp16.min_loss_scale", train.fp16.min_loss_scale, 1e-30, 1e30,
             "fp16 dynamic scaling: an overflow at this scale fails the run"),
  };
}

void validate_device(const run_config& c) {
  if (c.engine.device == "cuda" && c.engine.dtype != "fp32")
    fail("engine.dtype: engine.device = cuda serves fp32 weights for now, got {}", c.engine.dtype);
  if (c.engine.device == "cuda" && c.engine.batch_invariant)
    fail("engine.batch_invariant: not on engine.device = cuda yet");
  if (c.train.device != "cuda") return;
  if (c.train.ranks != 1)
    fail("train.ranks: train.device = cuda runs one rank for now, got {}", c.train.ranks);
  if (c.zero.stage != 0)
    fail("zero.stage: train.device = cuda runs zero.stage 0 for now, got {}", c.zero.stage);
  if (c.model.moe.num_experts != 0)
    fail("model.moe.num_experts: MoE models do not train on train.device = cuda yet, got {}",
         c.model.moe.num_experts);
  if (c.train.random_ltd.enabled)
    fail("train.random_ltd.enabled: random-LTD does not run on train.device = cuda yet");
}

}  // namespace zf::config_detail
