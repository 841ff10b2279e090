#pragma once
// Memory for compute: one aligned allocation per owner, touched once, reused every step.
// A first touch of a fresh page costs 10-17 us on our machines, so nothing inside a training or
// decoding step allocates: `arena` is sized by a counting pass, allocated once, then handed out.
// `tensor_view` names memory owned elsewhere (an fbuffer, an arena slice, a mmapped file, GPU
// memory) with its dtype, device and shape.
#include <sys/mman.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/device.hpp"
#include "kernels/dispatch.hpp"
#include "runtime/core/dtype.hpp"

namespace zf {

using device = kernels::device;  // cpu, cuda: the kernels' dispatch device

inline constexpr std::size_t k_align = 64;  // one cache line; AVX-512 friendly

// Buffers this large are mapped straight from the kernel (zero pages, backed only once written)
// instead of allocated and cleared: a quantized model's fp32 store, whose quantized matrices'
// slots are never written, then costs memory only for the tensors it holds in fp32.
inline constexpr std::size_t k_lazy_zero_bytes = 32u << 20;

// n floats between the host and memory on `where` (a GPU's copies waited for): the one place
// host code reads or fills device buffers (fbuffer::upload/download, ZeRO snapshots and loads).
inline void copy_to_host(device where, float* host, const float* src, std::size_t n) {
  if (where == device::cpu) return (void)std::memcpy(host, src, n * sizeof(float));
  kernels::gpu_copy(host, src, n * sizeof(float));
  kernels::gpu_synchronize();
}
inline void copy_from_host(device where, float* dst, const float* host, std::size_t n) {
  if (where == device::cpu) return (void)std::memcpy(dst, host, n * sizeof(float));
  kernels::gpu_copy(dst, host, n * sizeof(float));
  kernels::gpu_synchronize();
}

struct aligned_free {
  std::size_t mapped = 0;  // bytes of an mmap'ed buffer, 0 for aligned_alloc's
  bool gpu = false;        // GPU memory from kernels::gpu_alloc
  void operator()(void* p) const {
    if (gpu)
      kernels::gpu_free(p);
    else if (mapped)
      ::munmap(p, mapped);
    else
      std::free(p);
  }
};

// An owning, zero-initialised, 64-byte-aligned float array, in host memory or, built for
// device::cuda, in GPU memory (kernels/device.hpp: the stream-ordered pool, cleared on the
// current stream; its elements are then not for the host to read, so operator[] is host only).
class fbuffer {
 public:
  fbuffer() = default;
  explicit fbuffer(std::size_t n, device where = device::cpu) : where_(where) { resize(n); }
  explicit fbuffer(device where) : where_(where) {}
  device where() const { return where_; }
  void resize(std::size_t n) {
    if (n == n_) return;
    std::size_t bytes = (n * sizeof(float) + k_align - 1) / k_align * k_align;
    void* p = nullptr;
    aligned_free how;
    if (where_ == device::cuda) {
      data_.reset();  // back to the pool before the new block is taken
      p = kernels::gpu_alloc(bytes);
      kernels::gpu_zero(p, bytes);
      how.gpu = true;
    } else if (bytes >= k_lazy_zero_bytes) {
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      how.mapped = bytes;
    } else if (bytes) {
      p = std::aligned_alloc(k_align, bytes);
      if (!p) throw std::bad_alloc();
      std::memset(p, 0, bytes);
    }
    data_ = std::unique_ptr<float, aligned_free>(static_cast<float*>(p), how);
    n_ = n;
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::size_t size() const { return n_; }
  float& operator[](std::size_t i) { return data_.get()[i]; }
  const float& operator[](std::size_t i) const { return data_.get()[i]; }
  void zero() {
    if (!n_) return;
    if (where_ == device::cuda)
      kernels::gpu_zero(data_.get(), n_ * sizeof(float));
    else
      kernels::zero_fill(data_.get(), n_);
  }
  // Host <-> this buffer, n floats at offset `at` (a GPU buffer's copies are waited for).
  void upload(const float* host, std::size_t n, std::size_t at = 0) {
    copy_from_host(where_, data() + at, host, n);
  }
  void download(float* host, std::size_t n, std::size_t at = 0) const {
    copy_to_host(where_, host, data() + at, n);
  }

 private:
  std::unique_ptr<float, aligned_free> data_;
  std::size_t n_ = 0;
  device where_ = device::cpu;
};

// Bump allocator over one fbuffer. Use it in two passes with the same sequence of take() calls:
// counting (before reserve) sums the sizes, then after reserve() the same calls return pointers.
class arena {
 public:
  explicit arena(device where = device::cpu) : buf_(where) {}
  float* take(std::size_t n) {
    std::size_t padded = (n + 15) / 16 * 16;  // keep every slice 64-byte aligned
    float* p = buf_.size() ? buf_.data() + used_ : nullptr;
    used_ += padded;
    if (buf_.size() && used_ > buf_.size()) throw std::bad_alloc();
    return p;
  }
  // Ends the counting pass: allocates what was counted and rewinds.
  void reserve() {
    buf_.resize(used_);
    used_ = 0;
  }
  bool ready() const { return buf_.size() > 0; }
  std::size_t bytes() const { return buf_.size() * sizeof(float); }
  // Floats taken so far (the count of a counting pass), the buffer's floats, and a rewind that
  // lays a new sequence of takes out in the same buffer (each take checked against it).
  std::size_t counted() const { return used_; }
  std::size_t capacity() const { return buf_.size(); }
  void rewind() { used_ = 0; }

 private:
  fbuffer buf_;
  std::size_t used_ = 0;
};

// A non-owning view: data of `type` on `where`, shape [shape[0], ..., shape[rank-1]] row-major,
// rows (runs of the last dimension) `row_stride` elements apart (0: dense, the last dimension).
// A strided view is how q/k/v columns of a fused [t, 3C] buffer are named without a copy.
inline constexpr int k_max_rank = 5;

struct tensor_view {
  void* data = nullptr;
  dtype type = dtype::f32;
  device where = device::cpu;
  int rank = 0;
  std::array<std::int64_t, k_max_rank> shape{};
  std::int64_t row_stride = 0;

  // A dense fp32 view; throws std::length_error past k_max_rank dimensions.
  static tensor_view of(float* p, std::initializer_list<std::int64_t> dims,
                        device d = device::cpu) {
    return make(p, dtype::f32, dims, d);
  }
  static tensor_view make(void* p, dtype t, std::initializer_list<std::int64_t> dims,
                          device d = device::cpu) {
    if (dims.size() > static_cast<std::size_t>(k_max_rank)) {
      throw std::length_error("tensor_view: more than k_max_rank dimensions");
    }
    tensor_view v;
    v.data = p;
    v.type = t;
    v.where = d;
    for (std::int64_t n : dims) v.shape[static_cast<std::size_t>(v.rank++)] = n;
    return v;
  }

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[static_cast<std::size_t>(i)];
    return n;
  }
  std::int64_t cols() const { return rank ? shape[static_cast<std::size_t>(rank - 1)] : 1; }
  std::int64_t rows() const { return cols() ? numel() / cols() : 0; }
  // Elements from one row to the next.
  std::int64_t ld() const { return row_stride ? row_stride : cols(); }
  bool contiguous() const { return ld() == cols(); }
  // Bytes from the first element to one past the last (the span a copy must cover).
  std::size_t span_bytes() const {
    if (numel() == 0) return 0;
    return static_cast<std::size_t>((rows() - 1) * ld() + cols()) * size_of(type);
  }
  // The data as T*; throws std::invalid_argument when T is not the view's element type.
  template <class T>
  T* as() const {
    if (!matches<T>()) throw std::invalid_argument("tensor_view::as: element type mismatch");
    return static_cast<T*>(data);
  }

 private:
  template <class T>
  bool matches() const {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>) return type == dtype::f32;
    if constexpr (std::is_same_v<U, double>) return type == dtype::f64;
    if constexpr (std::is_same_v<U, std::int8_t>) return type == dtype::i8;
    if constexpr (std::is_same_v<U, std::uint8_t>) return type == dtype::u8;
    if constexpr (std::is_same_v<U, std::int32_t>) return type == dtype::i32;
    if constexpr (std::is_same_v<U, std::int64_t>) return type == dtype::i64;
    if constexpr (std::is_same_v<U, std::uint16_t>)
      return type == dtype::bf16 || type == dtype::f16;
    return false;
  }
};

}  // namespace zf
