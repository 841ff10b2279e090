// runtime/core/dtype (names, sizes, conversions to and from fp32) and runtime/core/tensor's tensor_view.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/core/tensor.hpp"
#include "test_util.hpp"

using zf::dtype;

TEST_CASE("dtype: names, sizes and parsing round-trip") {
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f16, dtype::f64, dtype::i8, dtype::u8, dtype::i32,
                  dtype::i64}) {
    CAPTURE(zf::dtype_name(t));
    CHECK(zf::parse_dtype(zf::dtype_name(t)) == t);
  }
  CHECK(zf::size_of(dtype::f32) == 4);
  CHECK(zf::size_of(dtype::bf16) == 2);
  CHECK(zf::size_of(dtype::f16) == 2);
  CHECK(zf::size_of(dtype::i8) == 1);
  CHECK(zf::size_of(dtype::i64) == 8);
  CHECK(zf::parse_dtype("BF16") == dtype::bf16);      // safetensors
  CHECK(zf::parse_dtype("bfloat16") == dtype::bf16);  // torch
  CHECK(zf::parse_dtype("F16") == dtype::f16);
  CHECK(zf::parse_dtype("half") == dtype::f16);
  CHECK(zf::parse_dtype("I8") == dtype::i8);
  CHECK(!zf::parse_dtype("F8_E4M3"));
  CHECK(!zf::parse_dtype(""));
  CHECK(zf::is_float(dtype::bf16));
  CHECK(!zf::is_float(dtype::i32));
}

TEST_CASE("dtype: to_f32 and from_f32 through every type, unaligned") {
  const std::vector<float> x = {1.0f, -3.0f, 0.5f, 100.0f};
  std::vector<unsigned char> buf(8 * x.size() + 1);
  std::vector<float> back(x.size());
  for (dtype t : {dtype::f32, dtype::bf16, dtype::f16, dtype::f64}) {
    CAPTURE(zf::dtype_name(t));
    zf::from_f32(x.data(), t, buf.data() + 1, x.size());
    zf::to_f32(buf.data() + 1, t, back.data(), x.size());
    CHECK(back == x);  // all exactly representable
  }
  // bf16 narrowing rounds to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
  const float tie = 1.0f + std::ldexp(1.0f, -8);
  zf::from_f32(&tie, dtype::bf16, buf.data(), 1);
  zf::to_f32(buf.data(), dtype::bf16, back.data(), 1);
  CHECK(back[0] == 1.0f);
  const std::int8_t i8[3] = {-128, 0, 127};
  zf::to_f32(i8, dtype::i8, back.data(), 3);
  CHECK(back[0] == -128.0f);
  CHECK(back[2] == 127.0f);
  const std::int64_t i64[2] = {-5, 1LL << 40};
  zf::to_f32(i64, dtype::i64, back.data(), 2);
  CHECK(back[0] == -5.0f);
  CHECK(back[1] == std::ldexp(1.0f, 40));
  const std::string m =
      zf::testing::error_of([&] { zf::from_f32(x.data(), dtype::i32, buf.data(), 1); });
  CHECK(zf::testing::contains(m, "i32"));
}

TEST_CASE("tensor_view: shape, strides, span and typed access") {
  zf::fbuffer b(3 * 10);
  auto v = zf::tensor_view::of(b.data(), {3, 8});
  CHECK(v.rank == 2);
  CHECK(v.numel() == 24);
  CHECK(v.rows() == 3);
  CHECK(v.cols() == 8);
  CHECK(v.contiguous());
  CHECK(v.span_bytes() == 24 * sizeof(float));
  CHECK(v.where == zf::device::cpu);
  v.row_stride = 10;  // columns 0..8 of [3, 10] rows
  CHECK(!v.contiguous());
  CHECK(v.ld() == 10);
  CHECK(v.span_bytes() == (2 * 10 + 8) * sizeof(float));
  CHECK(v.as<float>() == b.data());
  CHECK(v.as<const float>() == b.data());
  CHECK_THROWS_AS((void)v.as<std::int32_t>(), std::invalid_argument);
  std::uint16_t h[6] = {};
  auto hv = zf::tensor_view::make(h, dtype::bf16, {2, 1, 3}, zf::device::cuda);
  CHECK(hv.numel() == 6);
  CHECK(hv.span_bytes() == 12);
  CHECK(hv.where == zf::device::cuda);
  CHECK(hv.as<std::uint16_t>() == h);
  CHECK_THROWS_AS((void)zf::tensor_view::make(h, dtype::f16, {1, 1, 1, 1, 1, 1}),
                  std::length_error);
  CHECK(zf::tensor_view{}.numel() == 1);  // rank 0: a scalar
}
