#pragma once
// Element types of tensors and the conversions between them and fp32. Every conversion of a
// 16-bit float goes through kernels/convert.hpp (exact widening, round-to-nearest-even
// narrowing); this file only picks the one for a dtype.
#include <cstddef>
#include <optional>
#include <string_view>

namespace zf {

// Append new types (fp8 e4m3/e5m2, int4, ...) at the end: the values may be stored.
enum class dtype : unsigned char { f32, bf16, f16, f64, i8, u8, i32, i64 };

// Bytes per element.
std::size_t size_of(dtype t) noexcept;
// "f32", "bf16", "f16", "f64", "i8", "u8", "i32", "i64".
std::string_view dtype_name(dtype t) noexcept;
// Our names, safetensors' ("F32", "BF16", "I8", ...) and torch's ("float32", "bfloat16",
// "float16", "half", "int8", ...); nullopt for anything else.
std::optional<dtype> parse_dtype(std::string_view s) noexcept;
bool is_float(dtype t) noexcept;

// src: n elements of type t (any alignment) -> dst: [n] fp32. Exact for f16/bf16/i8/u8; f64 and
// large integers round to nearest.
void to_f32(const void* src, dtype t, float* dst, std::size_t n);
// src: [n] fp32 -> dst: n elements of type t (any alignment), rounded to nearest even. Float types
// only; an integer t throws zf::error.
void from_f32(const float* src, dtype t, void* dst, std::size_t n);

}  // namespace zf
