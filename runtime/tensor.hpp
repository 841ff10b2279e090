#pragma once
// Memory for compute: one aligned allocation per owner, touched once, reused every step.
// A first touch of a fresh page costs 10-17 us on our machines, so nothing inside a training or
// decoding step allocates: `arena` is sized by a counting pass, allocated once, then handed out.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace zf {

inline constexpr std::size_t k_align = 64;  // one cache line; AVX-512 friendly

struct aligned_free {
  void operator()(void* p) const { std::free(p); }
};

// An owning, zero-initialised, 64-byte-aligned float array.
class fbuffer {
 public:
  fbuffer() = default;
  explicit fbuffer(std::size_t n) { resize(n); }
  void resize(std::size_t n) {
    if (n == n_) return;
    std::size_t bytes = (n * sizeof(float) + k_align - 1) / k_align * k_align;
    void* p = bytes ? std::aligned_alloc(k_align, bytes) : nullptr;
    if (bytes && !p) throw std::bad_alloc();
    if (bytes) std::memset(p, 0, bytes);
    data_.reset(static_cast<float*>(p));
    n_ = n;
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::size_t size() const { return n_; }
  float& operator[](std::size_t i) { return data_.get()[i]; }
  const float& operator[](std::size_t i) const { return data_.get()[i]; }
  void zero() {
    if (n_) std::memset(data_.get(), 0, n_ * sizeof(float));
  }

 private:
  std::unique_ptr<float, aligned_free> data_;
  std::size_t n_ = 0;
};

// Bump allocator over one fbuffer. Use it in two passes with the same sequence of take() calls:
// counting (before reserve) sums the sizes, then after reserve() the same calls return pointers.
class arena {
 public:
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

 private:
  fbuffer buf_;
  std::size_t used_ = 0;
};

}  // namespace zf
