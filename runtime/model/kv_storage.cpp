#include "runtime/model/kv_storage.hpp"

#include <cstring>

#include "kernels/convert.hpp"
#include "runtime/core/error.hpp"

namespace zf {

const char* kv_dtype_name(kv_dtype t) noexcept {
  return t == kv_dtype::bf16 ? "bf16" : "fp32";
}

kv_storage::kv_storage(int n_layer, int num_blocks, int block_size, int kv_dim, kv_dtype type,
                       device where)
    : n_layer_(n_layer),
      num_blocks_(num_blocks),
      block_size_(block_size),
      kv_dim_(kv_dim),
      type_(type),
      k_(where),
      v_(where) {
  if (n_layer < 1 || num_blocks < 1 || block_size < 1 || kv_dim < 1)
    fail("kv storage: n_layer {}, num_blocks {}, block_size {}, kv_dim {} must all be >= 1",
         n_layer, num_blocks, block_size, kv_dim);
  elems_ = static_cast<std::size_t>(n_layer) * num_blocks * block_size * kv_dim;
  const std::size_t floats = type == kv_dtype::bf16 ? (elems_ + 1) / 2 : elems_;
  k_.resize(floats);
  v_.resize(floats);
}

void kv_storage::write(int layer, int block, int row, const float* k, const float* v) {
  if (where() == device::cuda) fail("kv storage: write() on GPU pools (use paged_kv_write)");
  const std::size_t off = offset(layer, block) + static_cast<std::size_t>(row) * kv_dim_;
  if (type_ == kv_dtype::fp32) {
    std::memcpy(k_.data() + off, k, kv_dim_ * sizeof(float));
    std::memcpy(v_.data() + off, v, kv_dim_ * sizeof(float));
    return;
  }
  kernels::f32_to_bf16(k, bits(k_) + off, static_cast<std::size_t>(kv_dim_));
  kernels::f32_to_bf16(v, bits(v_) + off, static_cast<std::size_t>(kv_dim_));
}

void kv_storage::copy_block(int src, int dst, int rows) {
  if (src < 0 || src >= num_blocks_ || dst < 0 || dst >= num_blocks_)
    fail("kv storage: copy_block {} -> {} out of range [0, {})", src, dst, num_blocks_);
  if (rows < 0 || rows > block_size_)
    fail("kv storage: copy_block of {} rows, block size is {}", rows, block_size_);
  if (src == dst || rows == 0) return;
  const std::size_t n = static_cast<std::size_t>(rows) * kv_dim_ * elem_bytes();
  auto* kb = reinterpret_cast<unsigned char*>(k_.data());
  auto* vb = reinterpret_cast<unsigned char*>(v_.data());
  for (int l = 0; l < n_layer_; ++l) {
    const std::size_t s = offset(l, src) * elem_bytes(), d = offset(l, dst) * elem_bytes();
    if (where() == device::cuda) {  // queued on the current stream, before the next forward
      kernels::gpu_copy(kb + d, kb + s, n);
      kernels::gpu_copy(vb + d, vb + s, n);
      continue;
    }
    std::memcpy(kb + d, kb + s, n);
    std::memcpy(vb + d, vb + s, n);
  }
}

}  // namespace zf
