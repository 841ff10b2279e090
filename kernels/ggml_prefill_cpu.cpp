// ggml family, prefill (ggml_quant.hpp: m > ggml_max_rows outside batch-invariant mode).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/bf16_linear.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/matmul.hpp"
#include "kernels/parallel.hpp"

namespace zf::kernels::cpu {

// Prefill: w decoded to bf16 rows (per-thread scratch, grown once; rows over the OpenMP team)
// and one oneDNN bf16 matmul (bf16_gemm's prefill: activations rounded to bf16). f32 rows run
// the fp32 GEMM on the mapped rows, bf16 rows bf16_gemm as they are.
void ggml_gemm_prefill(const ggml_matrix& w, const qgemm_io& io) {
  const int ldx = io.ldx ? io.ldx : w.k, ldy = io.ldy ? io.ldy : w.n;
  if (w.fmt == ggml_format::f32) {
    kernels::gemm(false, true, io.m, w.n, w.k, 1.0f, io.x, ldx, static_cast<const float*>(w.data),
                  w.k, io.accumulate ? 1.0f : 0.0f, io.y, ldy);
    if (io.bias)
      for (int i = 0; i < io.m; ++i) kernels::accumulate(io.y + std::size_t(i) * ldy, io.bias, w.n);
    return;
  }
  const std::uint16_t* rows = static_cast<const std::uint16_t*>(w.data);
  if (w.fmt != ggml_format::bf16) {
    thread_local std::vector<std::uint16_t> w16;
    w16.resize(std::max(w16.size(), std::size_t(w.n) * w.k));
    const std::size_t rb = row_bytes(w.fmt, w.k);
    const auto* src = static_cast<const unsigned char*>(w.data);
    std::uint16_t* dst = w16.data();
    parallel_ranges(std::size_t(w.n), 1, 64, [&](std::size_t r0, std::size_t r1) {
      std::vector<float> row(std::size_t(w.k));
      for (std::size_t r = r0; r < r1; ++r) {
        ggml_dequantize_row(w.fmt, src + r * rb, w.k, row.data());
        to_bf16(row.data(), dst + r * std::size_t(w.k), std::size_t(w.k));
      }
    });
    rows = dst;
  }
  kernels::bf16_gemm({w.n, w.k, rows}, io);
}

}  // namespace zf::kernels::cpu
