// Quantized linear layers (quant_linear.hpp).
#include "runtime/model/quant_linear.hpp"

#include <algorithm>

#include "kernels/matmul.hpp"

namespace zf {

kernels::qmatrix quant_linear::view() const {
  return {fmt, n, k, group, data.data(), scales.data(), asym ? zeros.data() : nullptr};
}

std::size_t quant_linear::bytes() const {
  return data.size() + bf16.size() * sizeof(std::uint16_t) + scales.size() * sizeof(float) +
         zeros.size() + (lorc_a.size() + lorc_b.size()) * sizeof(float) +
         (is_ggml() ? kernels::row_bytes(ggml.fmt, ggml.k) * std::size_t(ggml.n) : 0);
}

void quant_linear::forward(const float* x, int ldx, int m, const float* bias, float* y, int ldy,
                           bool accumulate) const {
  const kernels::qgemm_io io{x, ldx, m, bias, y, ldy, accumulate};
  if (is_bf16()) return kernels::bf16_gemm({n, k, bf16.data()}, io);
  if (is_ggml()) return kernels::ggml_gemm(ggml, io);
  const kernels::qmatrix q = view();
  if (act_int8)
    kernels::qgemm_w8a8(q, io);
  else
    kernels::qgemm(q, io);
  if (rank == 0) return;
  thread_local std::vector<float> t;
  t.resize(std::max(t.size(), std::size_t(m) * rank));
  kernels::gemm(false, false, m, rank, k, 1.0f, x, ldx ? ldx : k, lorc_a.data(), rank, 0.0f,
                t.data(), rank);
  kernels::gemm(false, false, m, n, rank, 1.0f, t.data(), rank, lorc_b.data(), n, 1.0f, y,
                ldy ? ldy : n);
}

void lm_quant::link() {
  auto at = [](std::vector<quant_linear>& v, std::size_t i) -> const quant_linear* {
    return v[i].n ? &v[i] : nullptr;
  };
  blocks.assign(linears.size() / 4, {});
  expert_blocks.assign(blocks.size(), {});
  std::size_t next = 0;  // into expert_linears
  for (std::size_t l = 0; l < blocks.size(); ++l) {
    blocks[l] = {at(linears, 4 * l), at(linears, 4 * l + 1), at(linears, 4 * l + 2),
                 at(linears, 4 * l + 3)};
    const int E = l < layer_experts.size() ? layer_experts[l] : 0;
    for (int e = 0; e < E; ++e, next += 2)
      expert_blocks[l].push_back(
          {nullptr, nullptr, at(expert_linears, next), at(expert_linears, next + 1)});
    if (E) blocks[l].experts = expert_blocks[l].data();
  }
}

std::size_t lm_quant::bytes() const {
  std::size_t b = head ? head->bytes() : 0;
  for (const auto& q : linears) b += q.bytes();
  for (const auto& q : expert_linears) b += q.bytes();
  return b;
}

}  // namespace zf
