// Mixed-precision (bf16) training's kept GEMM operands (model.hpp: plan_ops16, operand16_floats;
// block::operands16 says what they are).
#include <cmath>

#include "runtime/model/model.hpp"

namespace zf {

// bf16 operand storage for `rows` rows (a forward's b*t): weights and inputs of every layer,
// each piece 64-byte aligned; grown only, so a smaller batch reuses it. keep false (fp32, a
// forward no backward follows, quantized weights, a calibration observer reading the fp32
// activation): the blocks round per GEMM as before.
void transformer::plan_ops16(bool keep, int rows) {
  use16_ = keep && precision_ == kernels::precision::bf16 && !quant_ && !observer_;
  if (!use16_) return;
  const std::size_t n = std::size_t(rows), C = spec_.hidden, Q = spec_.q_dim(), D = spec_.qkv_dim(),
                    U = spec_.up_dim(), I = spec_.intermediate;
  for (int pass = 0; pass < 2; ++pass) {
    std::uint16_t* base = reinterpret_cast<std::uint16_t*>(ops16_.data());
    std::size_t used = 0;  // uint16 elements
    auto take = [&](std::size_t e) {
      std::uint16_t* p = pass ? base + used : nullptr;
      used += (e + 31) / 32 * 32;
      return p;
    };
    o16_.resize(std::size_t(L_));
    for (int l = 0; l < L_; ++l) {
      block::operands16& o = o16_[std::size_t(l)];
      const bool dense = spec_.dense_mlp(l);
      o.qkv_w = take(C * D);
      o.o_w = take(Q * C);
      o.ln1 = take(n * C);
      o.att = take(n * Q);
      o.up_w = dense ? take(C * U) : nullptr;
      o.down_w = dense ? take(I * C) : nullptr;
      o.ln2 = dense ? take(n * C) : nullptr;
      o.act = dense ? take(n * I) : nullptr;
    }
    if (pass == 0 && ops16_.size() * 2 < used) ops16_.resize((used + 1) / 2);
  }
}

double operand16_floats(const model_spec& s, int b, int t) {
  const double BT = double(b) * t, C = s.hidden, V = s.vocab_size, Q = s.q_dim(), D = s.qkv_dim(),
               U = s.up_dim(), I = s.intermediate;
  auto pad = [](double n) { return std::ceil(n / 32) * 32; };  // plan_ops16's 64-byte pieces
  double e = 0;                                                // bf16 elements
  for (int l = 0; l < s.n_layer; ++l) {
    e += pad(C * D) + pad(Q * C) + pad(BT * C) + pad(BT * Q);
    if (s.dense_mlp(l)) e += pad(C * U) + pad(I * C) + pad(BT * C) + pad(BT * I);
  }
  return (e + V * C + BT * C + BT * V) / 2;
}

}  // namespace zf
