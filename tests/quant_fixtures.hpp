#pragma once
// The small models the quantization tests share (tests/runtime/test_quant_model, test_lkd,
// tests/storage/test_quant_checkpoint): 2 layers, n_embd 64, 4 heads (Llama: 2 key/value heads,
// intermediate 96), vocabulary 97; every width a multiple of 32, so group-32 schemes fit.
#include <cstdint>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/model/model.hpp"

namespace zf::testing {

inline model_config quant_test_config(const char* arch, bool tied, int n_positions = 64) {
  model_config m;
  m.arch = arch;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 64;
  m.n_positions = n_positions;
  m.vocab_size = 97;
  m.tied_head = tied;
  if (m.arch == "llama") {
    m.n_kv_head = 2;
    m.intermediate = 96;
  }
  return m;
}

// Random parameters of m (init_params' scheme), scaled by 4 to spread the logits so that
// quantization errors show in them.
inline std::vector<float> quant_test_params(const model_config& m, uint64_t seed) {
  const auto L = layout_of(m);
  std::vector<float> p(L.total);
  init_params(L, m.n_layer, seed, p.data());
  for (auto& x : p) x *= 4.0f;
  return p;
}

}  // namespace zf::testing
