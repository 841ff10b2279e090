// Embedding family, CPU reference: GPT-2 token + learned position embeddings, fp32.
// Invariants: row gathers/scatters of c contiguous floats; duplicate ids accumulate in order.
// Nothing here allocates.
#include <algorithm>
#include <cstddef>

#include "kernels/embedding.hpp"

namespace zf::kernels {

// ids: [count] -> plan (embedding.hpp). A stable sort of the positions by id keeps each id's
// positions in increasing order.
void plan_embedding_grad(const int* ids, int count, embedding_grad_plan& plan) {
  plan.order.resize(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) plan.order[static_cast<std::size_t>(i)] = i;
  std::stable_sort(plan.order.begin(), plan.order.end(),
                   [ids](int a, int b) { return ids[a] < ids[b]; });
  plan.ids.clear();
  plan.starts.clear();
  for (int k = 0; k < count; ++k) {
    const int id = ids[plan.order[static_cast<std::size_t>(k)]];
    if (plan.ids.empty() || plan.ids.back() != id) {
      plan.ids.push_back(id);
      plan.starts.push_back(k);
    }
  }
  plan.starts.push_back(count);
}

}  // namespace zf::kernels

namespace zf::kernels::cpu {

// ids: [b, t]; wte: [vocab, c]; wpe: [max_pos, c] -> out: [b, t, c].
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (int bi = 0; bi < b; ++bi) {
    for (int ti = 0; ti < t; ++ti) {
      const std::size_t r = static_cast<std::size_t>(bi) * t + ti;
      const float* te = wte + static_cast<std::size_t>(ids[r]) * cc;
      float* o = out + r * cc;
      if (!wpe) {
        for (std::size_t j = 0; j < cc; ++j) o[j] = te[j];
        continue;
      }
      const float* pe = wpe + static_cast<std::size_t>(pos0 + ti) * cc;
      for (std::size_t j = 0; j < cc; ++j) o[j] = te[j] + pe[j];
    }
  }
}

// dout: [b, t, c] -> dwte: [vocab, c], dwpe: [max_pos, c] accumulated.
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (int bi = 0; bi < b; ++bi) {
    for (int ti = 0; ti < t; ++ti) {
      const std::size_t r = static_cast<std::size_t>(bi) * t + ti;
      const float* d = dout + r * cc;
      float* te = dwte + static_cast<std::size_t>(ids[r]) * cc;
      if (!dwpe) {
        for (std::size_t j = 0; j < cc; ++j) te[j] += d[j];
        continue;
      }
      float* pe = dwpe + static_cast<std::size_t>(pos0 + ti) * cc;
      for (std::size_t j = 0; j < cc; ++j) {
        te[j] += d[j];
        pe[j] += d[j];
      }
    }
  }
}

}  // namespace zf::kernels::cpu
