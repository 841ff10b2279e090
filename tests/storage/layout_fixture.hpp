#pragma once
// The parameter layout of a small GPT shape, as the checkpoint tests write and read it.
#include "runtime/model/layout.hpp"
#include "runtime/model/model.hpp"

namespace zf::testing {

inline zf::param_layout shape_layout(int n_layer, int n_embd, int n_head, int vocab_size,
                                     int n_positions) {
  zf::model_config m;
  m.n_layer = n_layer;
  m.n_embd = n_embd;
  m.n_head = n_head;
  m.vocab_size = vocab_size;
  m.n_positions = n_positions;
  return zf::layout_of(m);
}

}  // namespace zf::testing
