#pragma once
// ggml family (issue 18): GEMV / skinny GEMM kernels that read llama.cpp's (ggml's) weight
// formats in place, as a GGUF file stores them (memory-mapped, no conversion), for batch-1 decode
// at memory speed.
//
// Formats (ggml-common.h; every multi-byte field little-endian, blocks packed without padding):
//   f32   4 bytes per element
//   f16   IEEE binary16, 2 bytes per element
//   bf16  bfloat16 (fp32's top half), 2 bytes per element
//   q8_0  blocks of 32 elements, 34 bytes: fp16 scale d, then 32 int8 qs; x[j] = d * qs[j]
//   q4_0  blocks of 32 elements, 18 bytes: fp16 scale d, then 16 bytes qs;
//         x[j] = d * ((qs[j] & 0xF) - 8), x[j + 16] = d * ((qs[j] >> 4) - 8) for j < 16
//   q4_K  super-blocks of 256, 144 bytes: fp16 d, fp16 dmin, 12 bytes of eight 6-bit scales and
//         mins, 128 bytes of nibbles; sub-block j of 32: x = d * sc_j * q - dmin * m_j
//   q6_K  super-blocks of 256, 210 bytes: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16
//         int8 scales (one per 16 elements), fp16 d; x = d * sc * (q - 32)
//         (the K layouts in detail: ggml_kquant_cpu.cpp; read-only here: their encoders are
//         plain ones for tests, not ggml's search, and no export writes them)
//
// A weight matrix [n, k] is n rows (outputs) of k elements (inputs), each row row_bytes(fmt, k)
// bytes (k / 32 consecutive blocks for q8_0 / q4_0), rows contiguous: a GGUF tensor with
// ne[0] = k, ne[1] = n, exactly as a linear layer's weight is stored there. The data needs no
// alignment (a GGUF tensor is 32-byte aligned in the file, its blocks of 18 or 34 bytes are not).
//
// Encoders (host helpers, for tests and export) are ggml's reference quantizers, bit for bit:
//   q8_0  d = absmax / 127, id = 1 / d (0 when d is 0), qs = roundf(x * id) (half away from 0);
//         d stored as fp16 (round to nearest even)
//   q4_0  max = the element of largest magnitude (the first one on ties), signed; d = max / -8,
//         id = 1 / d (0 when d is 0), q = min(15, (int8_t)(x * id + 8.5f)) (truncation);
//         d stored as fp16 (quantize_row_q4_0_ref)
//   f16 / bf16 round to nearest even (kernels/convert.hpp)
//
// GEMM contract (ggml_gemm): y [m, n] (row stride ldy, 0: n) = x [m, k] (fp32, row stride ldx,
// 0: k) @ W^T (+ bias [n]) (+ y's previous values when accumulate), io as qgemm_io. Built for
// decode (m = 1..16, and every m in batch-invariant mode; larger m outside it is prefill: the
// matrix decoded to bf16 rows once per call and one oneDNN bf16 matmul with the activations
// rounded to bf16, as bf16 serving's prefill; f32 rows through the fp32 GEMM). The float
// formats and the K formats: fp32 activations and fp32 accumulation; the weights are decoded in
// registers, never copied. q8_0 / q4_0: activations quantized to 8 bits per block and integer
// dot products (see "q8 activations" below); what follows describes the fp32-activation kernel.
//   - Every decoded weight is exact in fp32 as its format defines it (ggml's own fp32 decoding
//     operations: the K formats' d * sc * q - dmin * m and (d * sc) * q round as ggml's do). So
//     the only further rounding is in the fp32 sums.
//   - AVX-512 (F/BW/VL/DQ, chosen at run time; the build targets x86-64-v3): per 32-element
//     block the weights become two 16-lane vectors (f16: vcvtph2ps; bf16: zero-extend and
//     shift; f32: loads; q4_K / q6_K: nibbles (and 2-bit highs) widened, converted and scaled
//     by the sub-block's scales), each multiplied into its own accumulator per (row, output)
//     by FMA, blocks in input order; the two accumulators' sum is reduced across lanes in a
//     fixed order (kernels/ggml_simd.hpp). Elsewhere a portable loop (8-lane vector
//     extensions: AVX2 under x86-64-v3) does the same per 32 elements with four 8-lane
//     accumulators over a decoded row.
//   - Tolerance against the reference (double sums of the exact weights times x): each lane of
//     an accumulator sums at most k / 16 products, then 4 + 1 adds reduce the lanes, so
//     |y - ref| <= (k / 16 + 8) * 2^-24 * sum_j |w_j x_j| (the fp32 rounding bound, gamma_n),
//     plus one rounding of |y| for each of bias and accumulate.
//   - An output's operations do not depend on m, on the row's place in the batch, on the output
//     range nor on the thread that computes it: a row of a batch of 5 is the same bits as the
//     same row alone (batch-invariant), and the outputs may be split over threads.
//   - Once a call has at least ggml_parallel_min multiply-adds, its outputs are split (pieces of
//     whole 16-output groups) over the threads kernels::kernel_pool lends, or else over a
//     kernels::task_pool of kernels::num_threads() threads (kernels/task_pool.hpp: pieces
//     claimed by whoever comes first, the caller waits only for started pieces). A second
//     thread calling while that pool is busy runs its call alone.
// q8_0 / q4_0 need k % 32 == 0, q4_K / q6_K k % 256 == 0 (ggml's own rules); the float formats
// take any k >= 1. Bad shapes throw std::invalid_argument.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/quant.hpp"  // qgemm_io

namespace zf::kernels {

enum class ggml_format : std::uint8_t { f32, f16, bf16, q8_0, q4_0, q4_K, q6_K };

struct ggml_format_info {
  const char* name;  // "f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K" (llama.cpp's names)
  int block;         // elements per block: 32 for q8_0 / q4_0, 256 for the K formats, 1 else
  int block_bytes;   // bytes per block: 34, 18, 144, 210, or 4 / 2 / 2
  int ggml_type;     // ggml's enum ggml_type value (GGUF's tensor type): 0, 1, 30, 8, 2, 12, 14
};
const ggml_format_info& ggml_info(ggml_format f);
// The format named `name`; false when there is none.
bool parse_ggml_format(std::string_view name, ggml_format& out);

inline constexpr int ggml_qk = 32;  // QK8_0 == QK4_0
// Elements per block and bytes per block of f.
int ggml_block_size(ggml_format f);
std::size_t ggml_block_bytes(ggml_format f);
// Bytes of one row of k elements. Throws std::invalid_argument when k < 1 or k is not a
// multiple of f's block size.
std::size_t row_bytes(ggml_format f, int k);
// Throws std::invalid_argument naming the problem when k or n is below 1, or k is not a
// multiple of f's block size (what every kernel checks first).
void check_ggml_shape(ggml_format f, int k, int n);

// ---- encoders and the reference decoder (host helpers, not dispatched) ----
// x [k] -> dst [row_bytes(f, k)], as described at the top of the file.
void ggml_quantize_row(ggml_format f, const float* x, int k, void* dst);
// src [row_bytes(f, k)] -> y [k]: every value exactly as the format defines it.
void ggml_dequantize_row(ggml_format f, const void* src, int k, float* y);
// rows of x [n, k] (row stride ldx, 0: k) -> dst [n, row_bytes(f, k)].
void ggml_quantize_rows(ggml_format f, const float* x, int ldx, int n, int k, void* dst);

// A weight matrix in one of the formats (see the top of the file), e.g. a GGUF tensor's data.
struct ggml_matrix {
  ggml_format fmt = ggml_format::f32;
  int n = 0, k = 0;            // outputs (rows), inputs (elements per row)
  const void* data = nullptr;  // [n, row_bytes(fmt, k)]
};

// Rows the kernel computes in one pass (larger m: passes of this many rows).
inline constexpr int ggml_max_rows = 16;
// Multiply-adds (m * n * k) at least for a call to be split over threads.
inline constexpr double ggml_parallel_min = double(1 << 18);

// y = x @ W^T (+ bias) (+ y). On device::cpu split over threads as above; on device::cuda the
// twin below (every pointer in GPU memory), the simulation's while cuda_simulated().
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io);

// ---- q8 activations: what the direct kernel multiplies q8_0 / q4_0 weights by ----
// Each row of x is quantized per 32-element block b (ggml_quantize_x8): d_b = max |x_j| / 127
// (fp32), id = 1 / d_b (0 when d_b is 0), q_j = nearbyint(x_j * id) (ties to even, |q_j| <=
// 127), sum_b = the block's sum of q_j. The output is then, for each (row, output),
//   y = sum over blocks b of (d_w,b * d_b) * isum_b,  isum_b = sum_j c_j q_j (exact integers;
//   c_j the weight's code: q8_0's int8, q4_0's nibble - 8)
// as llama.cpp's CPU backend computes these formats (vec_dot_q8_0_q8_0 / q4_0_q8_0). The only
// roundings past the activations' quantization: d_w * d_b per block (one), one fp32
// multiply-add per block pair and lane, and the 16-lane reduction (ggml_x8_cpu.cpp): against
// ggml_x8_reference, |y - ref| <= (k / 64 + 8) * 2^-24 * sum_j |d_w c_j d_b q_j| (each lane
// adds at most k / 64 products, each with one rounding of its scale), inside the bound at the
// top of the file with x replaced by the quantized x (what the tests check). Rows are quantized
// alone: batch-invariant.
struct ggml_x8 {
  const std::int8_t* q = nullptr;     // [m, k]
  const float* d = nullptr;           // [m, k / 32]
  const std::int32_t* sum = nullptr;  // [m, k / 32]
};
// x [k] (k % 32 == 0) -> q [k], d [k / 32], sum [k / 32].
void ggml_quantize_x8(const float* x, int k, std::int8_t* q, float* d, std::int32_t* sum);
// Quantized rows, the buffers grown once and reused (allocate once).
struct ggml_x8_buffer {
  std::vector<std::int8_t> q;
  std::vector<float> d;
  std::vector<std::int32_t> sum;
  // x [m, k] (row stride ldx, 0: k) quantized row by row.
  void quantize(const float* x, int ldx, int m, int k);
  ggml_x8 view() const { return {q.data(), d.data(), sum.data()}; }
};
// Whether the q8-activation kernel uses AVX-512 VNNI (else its portable loop).
bool ggml_x8_simd() noexcept;

// Whether the kernel uses its AVX-512 path (the CPU has AVX-512 F/BW/VL/DQ and
// set_ggml_simd(false) has not switched it off, e.g. to test the portable loop).
bool ggml_simd() noexcept;
void set_ggml_simd(bool on) noexcept;

namespace cpu {
// ggml_gemm's cpu side: prefill or the direct kernel below, split over the threads.
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io);
// The spec: every row dequantized (ggml_dequantize_row), each dot product accumulated in double
// in input order, then + bias, + y as the contract says. Single-threaded.
// Prefill: the matrix decoded to bf16 rows, one oneDNN bf16 matmul (f32 rows: the fp32 GEMM).
void ggml_gemm_prefill(const ggml_matrix& w, const qgemm_io& io);
void ggml_gemm_reference(const ggml_matrix& w, const qgemm_io& io);
// The fast kernel over outputs [o0, o1) of every row (AVX-512 or the portable loop), on the
// calling thread; batch-invariant as above.
// (q8_0 / q4_0: x quantized per call, then ggml_x8_direct.)
void ggml_gemm_direct(const ggml_matrix& w, const qgemm_io& io, int o0, int o1);
// q8_0 / q4_0 times quantized activations x (io.x unused), outputs [o0, o1) of every row.
void ggml_x8_direct(const ggml_matrix& w, const ggml_x8& x, const qgemm_io& io, int o0, int o1);
// The q8-activation spec: x quantized by ggml_quantize_x8, every block's product of the exact
// weights and codes summed in double, times d_b, summed in double; then + bias, + y.
void ggml_x8_reference(const ggml_matrix& w, const qgemm_io& io);
}  // namespace cpu

// The CUDA twin (ggml_quant_cuda.cu): the same contract with w.data, io.x, io.bias and io.y in
// GPU memory, queued on the current stream. A GEMV kernel (one warp per output, the weights
// streamed once per pass of up to ggml_max_rows rows; larger m: more passes, not a prefill
// GEMM). Every format, fp32 activations for all of them (q8_0 / q4_0 too: the activations are
// NOT quantized as on the cpu), fp32 sums per lane then a fixed warp butterfly: deterministic and
// batch-invariant. Against cpu::ggml_gemm_reference: |y - ref| <= (k / 32 + 24) * 2^-24 *
// (sum_j |w_j x_j| + |bias| + |y before|) (a lane adds at most 8 ceil(k / 256) + 7 products,
// then 5 butterfly adds; bias and accumulate round once each on both sides).
namespace cuda {
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io);
}  // namespace cuda
// ggml_quant_cuda.cu run by the CPU simulation of CUDA (kernels/cuda_sim.hpp), host pointers.
namespace cuda_sim {
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io);
}  // namespace cuda_sim

}  // namespace zf::kernels
