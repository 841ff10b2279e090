// What a tensor's fragments must cover (quant_checkpoint.hpp stored_parts), apart from the rest
// of the quantized checkpoint code so that the checkpoint writer and verifier need only the
// quant formats' sizes (kernels/quant_cpu.cpp), not the model (the fuzz build links them alone).
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/quant.hpp"
#include "runtime/core/error.hpp"
#include "storage/quant_checkpoint.hpp"

namespace zf::storage {

std::vector<stored_part> stored_parts(const quant_entry* q, const std::vector<int64_t>& shape,
                                      const bool present[3], const std::string& what) {
  std::vector<stored_part> out;
  if (!q || q->empty()) {
    uint64_t numel = 1;
    for (auto d : shape) numel *= d < 0 ? 0 : static_cast<uint64_t>(d);
    for (int k = 0; k < 3; ++k)
      if (k == kind_param || present[k]) out.push_back({k, dtype::f32, numel});
    return out;
  }
  kernels::qformat f{};
  if (!kernels::parse_qformat(q->format, f))
    fail(
        "{}: quantized format '{}' is unknown (int8, int4, fp8_e4m3, fp8_e5m2, fp6_e3m2 or "
        "fp4_e2m1)",
        what, q->format);
  try {
    kernels::check_quant_shape(f, q->k, q->n, q->group, q->asym);
  } catch (const std::invalid_argument& e) {
    fail("{}: {}", what, e.what());
  }
  if (q->rank < 0 || q->rank > std::min(q->k, q->n))
    fail("{}: LoRC rank {} is outside [0, {}]", what, q->rank, std::min(q->k, q->n));
  if (q->act_int8 && f != kernels::qformat::int8)
    fail("{}: int8 activations with {} weights (W8A8 is int8 weights only)", what, q->format);
  const uint64_t k = static_cast<uint64_t>(q->k), n = static_cast<uint64_t>(q->n);
  const uint64_t scales = n * (k / static_cast<uint64_t>(q->group));
  out.push_back({kind_qdata, dtype::u8, n * kernels::packed_row_bytes(f, q->k)});
  out.push_back({kind_qscales, dtype::f32, scales});
  if (q->asym) out.push_back({kind_qzeros, dtype::u8, scales});
  if (q->rank > 0) {
    out.push_back({kind_lorc_a, dtype::f32, k * static_cast<uint64_t>(q->rank)});
    out.push_back({kind_lorc_b, dtype::f32, static_cast<uint64_t>(q->rank) * n});
  }
  return out;
}

}  // namespace zf::storage
