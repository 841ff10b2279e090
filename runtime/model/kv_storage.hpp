#pragma once
// The paged KV memory the model's paged mode (runtime/lm) reads and writes; which sequence owns
// which block is the serving side's business (runtime/serve/kv_cache: the block pool and prefix
// cache).
#include <cstddef>
#include <cstdint>

#include "runtime/core/tensor.hpp"

namespace zf {

// The element type of K/V rows: fp32, or bf16 (`engine.kv_dtype`, issue 16: half the bytes per
// cached token, so twice the tokens in the same budget; rounded to nearest even on write, widened
// exactly on read, attention's math fp32 either way).
enum class kv_dtype : std::uint8_t { fp32, bf16 };
const char* kv_dtype_name(kv_dtype t) noexcept;

// K and V memory: [n_layer][num_blocks][block_size][kv_dim] each, of the dtype's elements,
// allocated once. Token slot s of a sequence lives in block table[s / block_size] at row
// s % block_size.
class kv_storage {
 public:
  // where: cpu, or cuda (the pools in GPU memory: the paged model writes them with
  // kernels::paged_kv_write; write() is then refused).
  kv_storage(int n_layer, int num_blocks, int block_size, int kv_dim,
             kv_dtype type = kv_dtype::fp32, device where = device::cpu);
  device where() const { return k_.where(); }
  // fp32 pools (dtype() == fp32 only).
  float* k(int layer, int block) { return k_.data() + offset(layer, block); }
  float* v(int layer, int block) { return v_.data() + offset(layer, block); }
  const float* k(int layer, int block) const { return k_.data() + offset(layer, block); }
  const float* v(int layer, int block) const { return v_.data() + offset(layer, block); }
  // bf16 pools (dtype() == bf16 only): bf16 bits.
  std::uint16_t* k16(int layer, int block) { return bits(k_) + offset(layer, block); }
  std::uint16_t* v16(int layer, int block) { return bits(v_) + offset(layer, block); }
  const std::uint16_t* k16(int layer, int block) const { return bits(k_) + offset(layer, block); }
  const std::uint16_t* v16(int layer, int block) const { return bits(v_) + offset(layer, block); }
  // One token's K and V rows (kv_dim floats each) into row `row` of block `block` of `layer`,
  // rounded to bf16 in a bf16 pool.
  void write(int layer, int block, int row, const float* k, const float* v);
  // Copies the first `rows` token slots of block src into dst, in every layer (copy-on-write
  // of a partially filled block shared by forked sequences).
  void copy_block(int src, int dst, int rows);
  int block_size() const { return block_size_; }
  int kv_dim() const { return kv_dim_; }
  int num_blocks() const { return num_blocks_; }
  kv_dtype dtype() const { return type_; }
  // Bytes of one element, of one block in every layer (K and V), and of the whole pool.
  std::size_t elem_bytes() const { return type_ == kv_dtype::bf16 ? 2 : 4; }
  std::size_t bytes() const { return 2 * elems_ * elem_bytes(); }

 private:
  std::size_t offset(int layer, int block) const {
    return (static_cast<std::size_t>(layer) * num_blocks_ + block) * block_size_ * kv_dim_;
  }
  // A bf16 pool lives in a float buffer of half the elements (64-byte aligned, zeroed).
  static std::uint16_t* bits(fbuffer& b) { return reinterpret_cast<std::uint16_t*>(b.data()); }
  static const std::uint16_t* bits(const fbuffer& b) {
    return reinterpret_cast<const std::uint16_t*>(b.data());
  }
  int n_layer_, num_blocks_, block_size_, kv_dim_;
  kv_dtype type_;
  std::size_t elems_ = 0;  // per pool (K or V)
  fbuffer k_, v_;
};

}  // namespace zf
