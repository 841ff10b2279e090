#pragma once
// Quant family (issue 14): the quantized weight formats, their element codecs, the packed row
// layouts the kernels read in place, round-to-nearest quantization, and quantized GEMMs.
//
// A quantized matrix holds a linear layer's weight as n output rows of k inputs (row-major in k,
// the transpose of the model's [in, out] Conv1D layout, so that every output of a GEMV is one dot
// product over a contiguous row). Each row is split into groups of `group` inputs (group == k:
// one scale per output channel); each group has one float scale and, for asymmetric int4, one
// integer zero point: value = (code - zero) * scale for integers, decode(code) * scale for the
// float formats.
//
// Formats (element codes are the low `bits` bits of a byte):
//   int8      symmetric, codes -127..127 (two's complement); ZeroQuant's weights
//   int4      symmetric -8..7 (two's complement nibble; scale = absmax / 7) or asymmetric 0..15
//             with a zero point per group (GPTQ's default)
//   fp8_e4m3  OCP FP8 E4M3 ("fn"): bias 7, no infinities, NaN = S.1111.111, max 448
//   fp8_e5m2  OCP FP8 E5M2: bias 15, IEEE infinities and NaNs, max 57344
//   fp6_e3m2  OCP MX FP6 E3M2 (FP6-LLM): bias 3, no infinities or NaN, max 28
//   fp4_e2m1  OCP MX FP4 E2M1: bias 1, no infinities or NaN, max 6 (0, 0.5, 1, 1.5, 2, 3, 4, 6)
//
// Packed rows (k a multiple of 32; every layout is a whole number of bytes per 32 elements, so a
// kernel walks blocks of 32 without carrying bits across them):
//   8-bit formats  one byte per element, in order
//   4-bit formats  16 bytes per block of 32: byte j = code[j] | code[j + 16] << 4, so one 16-byte
//                  load, a mask and a shift give elements 0..15 and 16..31 as two vectors
//   fp6_e3m2       24 bytes per block of 32: the low 4 bits of each code as the 4-bit layout
//                  (16 bytes), then the high 2 bits as one little-endian u64 with element j at
//                  bits 2j..2j+1 (8 bytes): a broadcast and a per-lane shift recover them
//
// Invariants:
// - Encoding rounds to nearest, ties to even code. Finite-only formats (e4m3 with saturate, e3m2,
//   e2m1) clamp overflow to +-max; e4m3 without saturate gives NaN and e5m2 without saturate
//   gives inf, as the OCP spec's non-saturating conversion. NaN encodes to the format's NaN, or
//   to +0 in a format without one (the quantizers refuse non-finite weights before encoding).
// - Every code decodes to its value exactly in fp32, and every finite code's value encodes back
//   to the same code (-0 to -0).
// - Fast kernels decode without denormals: FP8 through fp16 (e4m3's bits placed as an fp16
//   whose value is 2^8 times the code's, e5m2's as fp16's top byte) and vcvtph2ps; FP6, FP4 and
//   int4 through a small table of their values (vpermps); int8 by sign extension.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace zf::kernels {

enum class qformat : std::uint8_t { int8, int4, fp8_e4m3, fp8_e5m2, fp6_e3m2, fp4_e2m1 };

struct qformat_info {
  const char* name;  // as in configs and manifests: "int8", "fp6_e3m2", ...
  int bits;          // per element
  bool is_float;
  int ebits, mbits, bias;  // float formats only
  float max;               // largest finite magnitude of a code (int: 127 or 7)
};
const qformat_info& qinfo(qformat f);
// The format named `name`; false when there is none.
bool parse_qformat(std::string_view name, qformat& out);

// ---- element codecs (host helpers, not dispatched) ----
// Value of a float format's code (any bits-wide pattern), as the format specifies.
float fp_decode(qformat f, unsigned code);
// Code of x, rounded to nearest even; overflow as in the invariants.
unsigned fp_encode(qformat f, float x, bool saturate = true);

// Code of x / scale (+ zero) on the format's grid, nearest (ties to even), clamped to the grid.
// scale > 0; zero is used by asymmetric int4 only.
unsigned quantize_value(qformat f, float x, float scale, int zero, bool asym);
// Value of a code: (code - zero) * scale, or decode(code) * scale.
float dequantize_value(qformat f, unsigned code, float scale, int zero, bool asym);

// The scale (and zero) that maps a group of `count` values onto the format by its absolute
// maximum (asymmetric int4: by its min and max, zero in 0..15). pow2: the scale rounded up to a
// power of two (ZeroQuant-FP's constraint for W4A8). An all-zero group gets scale 1.
void group_scale(qformat f, const float* w, int count, bool asym, bool pow2, float& scale,
                 int& zero);

// ---- packed rows ----
// Bytes of one packed row of k elements (k % 32 == 0).
std::size_t packed_row_bytes(qformat f, int k);
// codes [k] (one code per byte) -> packed [packed_row_bytes], and back.
void pack_row(qformat f, const std::uint8_t* codes, int k, std::uint8_t* packed);
void unpack_row(qformat f, const std::uint8_t* packed, int k, std::uint8_t* codes);

// A quantized matrix [n, k] (see the top of the file). zeros: [n, k / group] or nullptr
// (symmetric).
struct qmatrix {
  qformat fmt = qformat::int8;
  int n = 0, k = 0, group = 0;
  const std::uint8_t* data = nullptr;  // [n, packed_row_bytes(fmt, k)]
  const float* scales = nullptr;       // [n, k / group]
  const std::uint8_t* zeros = nullptr;
  int groups() const { return k / group; }
};

// Throws std::invalid_argument naming the problem when k % 32, k % group or group % 32 is not 0,
// or asym is asked of a format other than int4 (what every quantizer checks first).
void check_quant_shape(qformat f, int k, int n, int group, bool asym);

// Round-to-nearest quantization of a weight: element (j, o) (input j < k, output o < n) at
// w[j * stride_k + o * stride_n] (the model's Conv1D [in, out] matrices: stride_k = n,
// stride_n = 1; an [out, in] one such as the LM head: stride_k = 1, stride_n = k) into
// data [n, packed_row_bytes], scales [n, k / group] and, with asym, zeros [n, k / group].
// Throws std::invalid_argument when k % 32, k % group or group % 32 is not 0, or asym is asked of
// a format other than int4.
void quantize_rtn(qformat f, const float* w, std::size_t stride_k, std::size_t stride_n, int k,
                  int n, int group, bool asym, bool pow2, std::uint8_t* data, float* scales,
                  std::uint8_t* zeros);
// The float matrix q stands for, in the model's layout: w [k, n] (overwritten).
void dequantize(const qmatrix& q, float* w);

// Per-token (per row) symmetric int8 activations (ZeroQuant): x [m, k] (row stride ldx, 0: k)
// -> codes [m, k], scales [m] (absmax / 127; an all-zero row gets 1). per_tensor: one scale for
// all rows (every scales[i] the same), the baseline that outlier channels ruin.
void quantize_activations(const float* x, int ldx, int m, int k, bool per_tensor,
                          std::int8_t* codes, float* scales);

// ---- quantized GEMMs (dispatched) ----
// One GEMM's activations and output: y [m, n] (row stride ldy, 0: n) = x [m, k] (row stride
// ldx, 0: k) @ dequantize(q) (+ bias [n] when not null) (+ y's previous values when accumulate:
// a residual connection).
struct qgemm_io {
  const float* x = nullptr;
  int ldx = 0;
  int m = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int ldy = 0;
  bool accumulate = false;
};
// Weight-only quantization, float activations; decode (few rows) and prefill alike.
void qgemm(const qmatrix& q, const qgemm_io& io);
// W8A8 (q int8): each row of x quantized to int8 with its own scale (quantize_activations, into
// per-thread buffers reused across calls), then y[i, o] = xs[i] * sum_g scales[o, g] *
// sum_{j in g} xq[i, j] * code[o, j] (+ bias, + y), the inner sums exact in int32.
void qgemm_w8a8(const qmatrix& q, const qgemm_io& io);

// Whether the quant kernels use their AVX-512 paths (the CPU has AVX-512 F/BW/VL/DQ and they
// are not switched off); set_quant_simd(false) forces the portable paths, e.g. to test them.
bool quant_simd() noexcept;
void set_quant_simd(bool on) noexcept;
// Whether the W8A8 GEMMs use AVX-512 VNNI (quant_simd() and the CPU has it).
bool quant_vnni() noexcept;
// Whether the W8A8 prefill GEMM uses AMX-INT8 tiles (for 32 token rows or more, groups a
// multiple of 64): quant_vnni(), the CPU has AMX-INT8, Linux granted the tile state, and
// set_quant_amx(false) has not switched it off (the VNNI tiles then, e.g. to test them).
bool quant_amx() noexcept;
void set_quant_amx(bool on) noexcept;

namespace cpu {
// The spec: dequantize (quant_cpu.cpp's scalar codecs), then one sgemm.
void qgemm_reference(const qmatrix& q, const qgemm_io& io);
// Prefill: rows of q dequantized a tile at a time (dequantize_rows) into a per-thread buffer
// reused across calls, each tile one sgemm.
void qgemm(const qmatrix& q, const qgemm_io& io);
// Decode: outputs [o0, o1) of every row, straight from the packed rows (no dequantized copy).
// Each output of each row is computed by the same operations whatever m and the range are
// (batch-invariant), so callers may split outputs over threads.
void qgemm_direct(const qmatrix& q, const qgemm_io& io, int o0, int o1);
// Rows [o0, o1) of q as floats, out [o1 - o0, q.k] (q's row layout: one output per row).
void dequantize_rows(const qmatrix& q, int o0, int o1, float* out);
// W8A8 on activations already quantized: xq [m, k] dense, xs [m]; io.x is not read. The
// reference: exact int32 group sums.
void qgemm_w8a8(const qmatrix& q, const std::int8_t* xq, const float* xs, const qgemm_io& io);
// Its decode kernel over outputs [o0, o1) (AVX-512 VNNI where present), batch-invariant as
// qgemm_direct.
void qgemm_w8a8_direct(const qmatrix& q, const std::int8_t* xq, const float* xs, const qgemm_io& io,
                       int o0, int o1);
// W8A8 prefill (quant_gemm_cpu.cpp): outputs [o0, o1) of y [m, n] (io.y, io.ldy, io.bias,
// io.accumulate; io.x is not read) from xu [m, k] dense = the activation codes + 128 as bytes
// (quantize_activations_u8) and xs [m], q int8 [n, k] with group <= 65536: the same group sums
// and scales as qgemm_w8a8, int8 x int8 -> int32 on AMX-INT8 (quant_amx(): 32 token rows x 32
// outputs per tile block) or VNNI (vpdpbusd, 8 rows x 48 outputs), k in groups; a portable loop
// otherwise. Outputs may be split over threads.
void qgemm_w8a8_gemm(const qmatrix& q, const std::uint8_t* xu, const float* xs, const qgemm_io& io,
                     int o0, int o1);
// quantize_activations (per token) stored as code + 128: x [m, k] (row stride ldx, 0: k) ->
// xu [m, k] dense, scales [m]; codes and scales the same bits as quantize_activations' for
// finite x.
void quantize_activations_u8(const float* x, int ldx, int m, int k, std::uint8_t* xu,
                             float* scales);
}  // namespace cpu

}  // namespace zf::kernels
