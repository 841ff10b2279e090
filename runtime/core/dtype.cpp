#include "runtime/core/dtype.hpp"

#include <cstdint>
#include <cstring>

#include "kernels/convert.hpp"
#include "runtime/core/error.hpp"

namespace zf {
namespace {

struct dtype_info {
  dtype t;
  std::size_t size;
  std::string_view name, safetensors, torch;
};

constexpr dtype_info k_types[] = {
    {dtype::f32, 4, "f32", "F32", "float32"}, {dtype::bf16, 2, "bf16", "BF16", "bfloat16"},
    {dtype::f16, 2, "f16", "F16", "float16"}, {dtype::f64, 8, "f64", "F64", "float64"},
    {dtype::i8, 1, "i8", "I8", "int8"},       {dtype::u8, 1, "u8", "U8", "uint8"},
    {dtype::i32, 4, "i32", "I32", "int32"},   {dtype::i64, 8, "i64", "I64", "int64"},
};

static_assert(k_types[static_cast<std::size_t>(dtype::i64)].t == dtype::i64,
              "k_types in enum order");

const dtype_info& info(dtype t) {
  return k_types[static_cast<std::size_t>(t)];
}

// n elements of T at src (any alignment) -> dst as float.
template <class T>
void widen(const void* src, float* dst, std::size_t n) {
  const auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, s + sizeof(T) * i, sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

std::size_t size_of(dtype t) noexcept {
  return info(t).size;
}

std::string_view dtype_name(dtype t) noexcept {
  return info(t).name;
}

std::optional<dtype> parse_dtype(std::string_view s) noexcept {
  for (const auto& d : k_types) {
    if (s == d.name || s == d.safetensors || s == d.torch) return d.t;
  }
  if (s == "float") return dtype::f32;
  if (s == "half") return dtype::f16;
  if (s == "double") return dtype::f64;
  return std::nullopt;
}

bool is_float(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::bf16 || t == dtype::f16 || t == dtype::f64;
}

void to_f32(const void* src, dtype t, float* dst, std::size_t n) {
  switch (t) {
    case dtype::f32:
      if (n) std::memcpy(dst, src, n * sizeof(float));
      return;
    case dtype::bf16:
      return kernels::bf16_to_f32(src, dst, n);
    case dtype::f16:
      return kernels::f16_to_f32(src, dst, n);
    case dtype::f64:
      return widen<double>(src, dst, n);
    case dtype::i8:
      return widen<std::int8_t>(src, dst, n);
    case dtype::u8:
      return widen<std::uint8_t>(src, dst, n);
    case dtype::i32:
      return widen<std::int32_t>(src, dst, n);
    case dtype::i64:
      return widen<std::int64_t>(src, dst, n);
  }
}

void from_f32(const float* src, dtype t, void* dst, std::size_t n) {
  switch (t) {
    case dtype::f32:
      if (n) std::memcpy(dst, src, n * sizeof(float));
      return;
    case dtype::bf16:
      return kernels::f32_to_bf16(src, dst, n);
    case dtype::f16:
      return kernels::f32_to_f16(src, dst, n);
    case dtype::f64:
      for (std::size_t i = 0; i < n; ++i) {
        const double d = src[i];
        std::memcpy(static_cast<unsigned char*>(dst) + 8 * i, &d, 8);
      }
      return;
    default:
      fail("from_f32: cannot narrow fp32 to {} (float types only: f32, bf16, f16, f64)",
           dtype_name(t));
  }
}

}  // namespace zf
