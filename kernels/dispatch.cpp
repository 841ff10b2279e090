// The one dispatch point: every public zf::kernels function, each a single branch on this
// thread's device (kernels/dispatch.hpp). Adding a cuda twin of a kernel means declaring
// cuda::<fn> and cuda_sim::<fn> in its <family>.hpp, writing <family>_cuda.cu and turning its
// ZF_CPU_ONLY below into ZF_DISPATCH (or its ZF_CPU_CHECK into ZF_CUDA_FIRST); no caller changes.
// Invariants: the device is cpu unless a thread sets cuda (refused without a GPU unless CUDA is
// simulated); the cpu path costs one thread-local load and a predictable branch per call, the
// cuda path one more relaxed load (simulated or not), never a virtual call.
#include "kernels/dispatch.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/bf16_linear.hpp"
#include "kernels/device.hpp"
#include "kernels/embedding.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/matmul.hpp"
#include "kernels/matmul_invariant.hpp"
#include "kernels/moe.hpp"
#include "kernels/norm.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/parallel.hpp"
#include "kernels/quant.hpp"
#include "kernels/rope.hpp"
#include "kernels/softmax.hpp"
#include "kernels/threads.hpp"

namespace zf::kernels {

#if defined(ZF_CUDA)
namespace cuda {
int device_count() noexcept;  // kernels/device_cuda.cu
}  // namespace cuda
#endif
// Every cuda twin also exists as cuda_sim::<fn> (the simulation, linked into zf_kernels always).

namespace {

thread_local device tl_device = device::cpu;
thread_local bool tl_invariant = false;
thread_local const kernel_pool* tl_pool = nullptr;

// Read once from the environment; cuda_simulation_scope changes it in tests.
std::atomic<bool> g_simulated{[] {
  const char* v = std::getenv("ZF_CUDA_SIM");
  return v != nullptr && std::string(v) == "1";
}()};

inline bool on_cuda() noexcept {
  return tl_device == device::cuda;
}

[[noreturn]] void no_twin(const char* fn) {
  throw kernel_error(std::string("zf::kernels::") + fn +
                     " has no cuda kernel yet (only the cpu one); call it on device::cpu with host "
                     "pointers");
}

}  // namespace

// ZF_CUDA_CALL: the cuda twin, nvcc's or the simulation's. ZF_DISPATCH: the family has a cuda
// twin. ZF_CUDA_FIRST: a family whose cpu side splits its work (over the cores) and has a cuda
// twin; on cuda the twin takes the whole call.
#if defined(ZF_CUDA)
#define ZF_CUDA_CALL(fn, ...) \
  (g_simulated.load(std::memory_order_relaxed) ? cuda_sim::fn(__VA_ARGS__) : cuda::fn(__VA_ARGS__))
#else
#define ZF_CUDA_CALL(fn, ...) cuda_sim::fn(__VA_ARGS__)
#endif
#define ZF_DISPATCH(fn, ...) return on_cuda() ? ZF_CUDA_CALL(fn, __VA_ARGS__) : cpu::fn(__VA_ARGS__)
#define ZF_CUDA_FIRST(fn, ...) \
  if (on_cuda()) return ZF_CUDA_CALL(fn, __VA_ARGS__)
// A cpu-only family refuses the cuda device, then runs (ZF_CPU_ONLY) or splits (the callers of
// ZF_CPU_CHECK) its cpu kernel.
#define ZF_CPU_CHECK(fn)      \
  if (on_cuda()) [[unlikely]] \
  no_twin(#fn)
#define ZF_CPU_ONLY(fn, ...) \
  ZF_CPU_CHECK(fn);          \
  return cpu::fn(__VA_ARGS__)

const char* device_name(device d) noexcept {
  return d == device::cuda ? "cuda" : "cpu";
}

bool cuda_built() noexcept {
#if defined(ZF_CUDA)
  return true;
#else
  return false;
#endif
}

int cuda_device_count() noexcept {
#if defined(ZF_CUDA)
  return cuda::device_count();
#else
  return 0;
#endif
}

device current_device() noexcept {
  return tl_device;
}

bool cuda_simulated() noexcept {
  return g_simulated.load(std::memory_order_relaxed);
}

void set_cuda_simulated(bool on) noexcept {
  g_simulated.store(on, std::memory_order_relaxed);
}

void set_current_device(device d) {
  if (d == device::cuda && !cuda_simulated()) {
    if (!cuda_built()) {
      throw kernel_error(
          "device cuda requested, but zeroflow was built without CUDA: reconfigure with "
          "-DZF_CUDA=ON (needs nvcc and the CUDA toolkit)");
    }
    if (cuda_device_count() == 0) {
      throw kernel_error("device cuda requested, but this process sees no CUDA device");
    }
  }
  tl_device = d;
}

bool batch_invariant() noexcept {
  return tl_invariant;
}
void set_batch_invariant(bool on) noexcept {
  tl_invariant = on;
}

const kernel_pool* lent_pool() noexcept {
  return tl_pool;
}
kernel_pool_scope::kernel_pool_scope(const kernel_pool* p) : prev_(tl_pool) {
  tl_pool = p;
}
kernel_pool_scope::~kernel_pool_scope() {
  tl_pool = prev_;
}

namespace {
constexpr int k_few_rows = 8;  // rows at most of a "decode" GEMM (gemm below; measured 1.3-4x)

// Output columns [0, n) of an m x n x k product over the lent pool's threads, fn(j0, j1) per
// piece: pieces are multiples of 16 (the kernels' widest tile), per_thread per thread to even
// out uneven progress, and only with at least 1M multiply-adds in all (else one call, no wake-ups).
// The kernels split this way compute every output alike whatever piece it is in.
template <class Fn>
void split_outputs(int m, int n, int k, Fn&& fn, int per_thread = 4) {
  const kernel_pool* p = tl_pool;
  if (!p || p->threads < 2 || double(m) * n * k < double(1 << 20) || n < 32) return fn(0, n);
  const int piece = std::max(16, (n / (per_thread * p->threads) + 15) / 16 * 16);
  p->run((n + piece - 1) / piece, [&](int i) { fn(i * piece, std::min(n, (i + 1) * piece)); });
}

// The invariant GEMM split over the pool's threads by output columns.
void gemm_invariant_split(bool trans_b, int m, int n, int k, const float* a, int lda,
                          const float* b, int ldb, float beta, float* c, int ldc) {
  const int la = lda ? lda : k, lc = ldc ? ldc : n, lb = ldb ? ldb : (trans_b ? k : n);
  split_outputs(
      m, n, k,
      [&](int j0, int j1) {
        const float* bj = trans_b ? b + static_cast<std::size_t>(j0) * lb : b + j0;
        cpu::gemm_invariant(trans_b, m, j1 - j0, k, a, la, bj, lb, beta, c + j0, lc);
      },
      // a few rows stream b's rows through c (matmul_invariant_cpu.cpp): one wide piece per
      // thread keeps each row's stretch long for the prefetchers (gpt2-124M fp32 decode 29.5 ->
      // 25 ms/token against 4 pieces per thread)
      !trans_b && m <= 8 ? 1 : 4);
}
}  // namespace

// Calls with fewer elements than this run on the calling thread alone (parallel.hpp).
constexpr std::size_t k_parallel_min = 1 << 16;

// Row-wise: rows over the cores (every row computed alone, so the same bits), once a call has
// k_parallel_min elements.
template <class Fn>
void over_rows(int n, int v, Fn&& fn) {
  const std::size_t min_rows = k_parallel_min / std::max<std::size_t>(1, std::size_t(v)) + 1;
  cpu::parallel_ranges(std::size_t(std::max(n, 0)), 1, min_rows,
                       [&](std::size_t b, std::size_t e) { fn(int(b), int(e - b)); });
}
// matmul
void round_bf16(const float* x, int rows, int cols, int ld, std::uint16_t* dst) {
  ZF_DISPATCH(round_bf16, x, rows, cols, ld, dst);
}
void gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const std::uint16_t* a,
               int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc) {
  ZF_DISPATCH(gemm_bf16, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  // Batch-invariant mode; and a few rows (decode steps) with threads lent: our GEMM split over
  // columns streams the weights faster there than OpenBLAS's sgemm (bench/serve, decode).
  // Both are fp32 kernels: a 16-bit compute precision (gemm_lib.hpp) takes the library path.
  // On cuda: cuBLASLt picks its algorithm by shape, so batch invariance is not promised there.
  if (tl_invariant && on_cuda()) [[unlikely]]
    no_twin("gemm (batch-invariant)");
  ZF_CUDA_FIRST(gemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const bool few_rows = tl_pool && tl_pool->threads > 1 && m <= k_few_rows;
  if ((tl_invariant || few_rows) && compute_precision() == precision::f32 && !trans_a &&
      alpha == 1.0f && (beta == 0.0f || beta == 1.0f)) {
    return gemm_invariant_split(trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
  }
  return cpu::gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm_invariant(bool trans_b, int m, int n, int k, const float* a, int lda, const float* b,
                    int ldb, float beta, float* c, int ldc) {
  ZF_CPU_ONLY(gemm_invariant, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}
void linear_forward(const float* x, const float* w, const float* b, float* y, int n, int ic,
                    int oc) {
  ZF_DISPATCH(linear_forward, x, w, b, y, n, ic, oc);
}
void linear_backward_bf16(const std::uint16_t* x16, const std::uint16_t* w16, const float* dy,
                          float* dx, float* dw, float* db, int n, int ic, int oc) {
  ZF_DISPATCH(linear_backward_bf16, x16, w16, dy, dx, dw, db, n, ic, oc);
}
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, int n, int ic, int oc) {
  ZF_DISPATCH(linear_backward, x, w, dy, dx, dw, db, n, ic, oc);
}

// quant

void qgemm(const qmatrix& q, const qgemm_io& io) {
  ZF_CPU_CHECK(qgemm);
  // Decode rows, and every batch-invariant call: the direct kernel; prefill: dequantized tiles
  // through sgemm.
  if (!tl_invariant && io.m > k_few_rows) return cpu::qgemm(q, io);
  split_outputs(io.m, q.n, q.k, [&](int o0, int o1) { cpu::qgemm_direct(q, io, o0, o1); });
}
void qgemm_w8a8(const qmatrix& q, const qgemm_io& io) {
  ZF_CPU_CHECK(qgemm_w8a8);
  if (q.fmt != qformat::int8) throw std::invalid_argument("qgemm_w8a8: the weights are not int8");
  thread_local std::vector<std::int8_t> xq;
  thread_local std::vector<float> xs;
  xs.resize(std::max(xs.size(), std::size_t(io.m)));
  if (!tl_invariant && io.m > k_few_rows && quant_vnni() && q.group <= 65536) {
    // Prefill: int8 x int8 -> int32 on VNNI or AMX, the activations offset to unsigned bytes
    // (quant_gemm_cpu.cpp), split over the lent threads by outputs (with none lent, one
    // thread: still 3-6x sgemm's one-thread speed, bench_kernels --filter w8a8).
    thread_local std::vector<std::uint8_t> xu;
    xu.resize(std::max(xu.size(), std::size_t(io.m) * q.k));
    cpu::quantize_activations_u8(io.x, io.ldx, io.m, q.k, xu.data(), xs.data());
    const std::uint8_t* codes = xu.data();
    const float* scales = xs.data();
    split_outputs(io.m, q.n, q.k,
                  [&](int o0, int o1) { cpu::qgemm_w8a8_gemm(q, codes, scales, io, o0, o1); });
    return;
  }
  xq.resize(std::max(xq.size(), std::size_t(io.m) * q.k));
  quantize_activations(io.x, io.ldx, io.m, q.k, false, xq.data(), xs.data());
  if (!tl_invariant && io.m > k_few_rows) {
    // Prefill without VNNI: the same products in float (int8 codes times their scales are exact
    // in fp32), so sgemm's speed with W8A8's numbers up to summation order.
    thread_local std::vector<float> xf;
    xf.resize(std::max(xf.size(), std::size_t(io.m) * q.k));
    for (std::size_t i = 0; i < std::size_t(io.m) * q.k; ++i) xf[i] = float(xq[i]) * xs[i / q.k];
    qgemm_io f = io;
    f.x = xf.data();
    f.ldx = 0;
    return cpu::qgemm(q, f);
  }
  // pointers, not the thread_local names: the pool's threads would see their own (empty) ones
  const std::int8_t* codes = xq.data();
  const float* scales = xs.data();
  split_outputs(io.m, q.n, q.k,
                [&](int o0, int o1) { cpu::qgemm_w8a8_direct(q, codes, scales, io, o0, o1); });
}

// norm
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int n, int c, float eps) {
  ZF_CUDA_FIRST(layernorm_forward, x, gamma, beta, y, mean, rstd, n, c, eps);
  const std::size_t cc = std::size_t(c);
  over_rows(n, c, [&](int r0, int rows) {
    cpu::layernorm_forward(x + r0 * cc, gamma, beta, y + r0 * cc, mean ? mean + r0 : nullptr,
                           rstd ? rstd + r0 : nullptr, rows, c, eps);
  });
}
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dgamma, float* dbeta, int n, int c) {
  ZF_DISPATCH(layernorm_backward, x, gamma, mean, rstd, dy, dx, dgamma, dbeta, n, c);
}
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* rstd, int n, int c,
                     float eps) {
  ZF_DISPATCH(rmsnorm_forward, x, gamma, y, rstd, n, c, eps);
}
void rmsnorm_forward(const float* x, const float* gamma, float* y, int n, int c, float eps) {
  ZF_DISPATCH(rmsnorm_forward, x, gamma, y, nullptr, n, c, eps);
}
void rmsnorm_backward(const float* x, const float* gamma, const float* rstd, const float* dy,
                      float* dx, float* dgamma, int n, int c) {
  ZF_DISPATCH(rmsnorm_backward, x, gamma, rstd, dy, dx, dgamma, n, c);
}

// activation
// Element-wise: over the cores in pieces of whole 8-lane vectors (parallel.hpp), same bits.
void gelu_forward(const float* x, float* y, std::size_t n) {
  ZF_CUDA_FIRST(gelu_forward, x, y, n);
  cpu::parallel_ranges(n, 8, k_parallel_min, [&](std::size_t b, std::size_t e) {
    cpu::gelu_forward(x + b, y + b, e - b);
  });
}
void gelu_backward(const float* x, const float* dy, float* dx, std::size_t n) {
  ZF_CUDA_FIRST(gelu_backward, x, dy, dx, n);
  cpu::parallel_ranges(n, 8, k_parallel_min, [&](std::size_t b, std::size_t e) {
    cpu::gelu_backward(x + b, dy + b, dx + b, e - b);
  });
}
void gelu_forward_bf16(const float* x, std::uint16_t* y, std::size_t n) {
  ZF_CUDA_FIRST(gelu_forward_bf16, x, y, n);
  cpu::parallel_ranges(n, 8, k_parallel_min, [&](std::size_t b, std::size_t e) {
    cpu::gelu_forward_bf16(x + b, y + b, e - b);
  });
}
void zero_fill(float* y, std::size_t n) {  // host memory whatever the device: no check
  cpu::parallel_ranges(n, 16, std::size_t(1) << 20, [&](std::size_t b, std::size_t e) {
    std::memset(y + b, 0, (e - b) * sizeof(float));
  });
}
void add_forward(const float* a, const float* b, float* y, std::size_t n) {
  ZF_CUDA_FIRST(add_forward, a, b, y, n);
  cpu::parallel_ranges(n, 8, k_parallel_min, [&](std::size_t b0, std::size_t e) {
    cpu::add_forward(a + b0, b + b0, y + b0, e - b0);
  });
}
void swiglu_forward(const float* gu, float* y, int n, int m) {
  ZF_DISPATCH(swiglu_forward, gu, y, n, m);
}
void swiglu_backward(const float* gu, const float* dy, float* dgu, int n, int m) {
  ZF_DISPATCH(swiglu_backward, gu, dy, dgu, n, m);
}
void accumulate(float* y, const float* x, std::size_t n) {
  ZF_CUDA_FIRST(accumulate, y, x, n);
  cpu::parallel_ranges(n, 8, k_parallel_min, [&](std::size_t b0, std::size_t e) {
    cpu::accumulate(y + b0, x + b0, e - b0);
  });
}
void bias_add(float* y, const float* b, int n, int c) {
  if (b == nullptr) return;
  ZF_DISPATCH(bias_add, y, b, n, c);
}
void copy(float* y, const float* x, std::size_t n) {
  if (on_cuda()) return gpu_copy(y, x, n * sizeof(float));
  if (n) std::memcpy(y, x, n * sizeof(float));
}
void clear(float* y, std::size_t n) {
  if (on_cuda()) return gpu_zero(y, n * sizeof(float));
  if (n) std::memset(y, 0, n * sizeof(float));
}

// rope
void rope_tables(int n_pos, int head_dim, const double* inv_freq, float* cos, float* sin) {
  ZF_CPU_ONLY(rope_tables, n_pos, head_dim, inv_freq, cos, sin);
}
void rope_forward(float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                  const float* cos, const float* sin) {
  ZF_DISPATCH(rope_forward, x, ld, n, pos, n_head, head_dim, cos, sin);
}
void rope_backward(float* dx, int ld, int n, const int* pos, int n_head, int head_dim,
                   const float* cos, const float* sin) {
  ZF_DISPATCH(rope_backward, dx, ld, n, pos, n_head, head_dim, cos, sin);
}

// attention
void attention_forward(const attention_shape& s, const float* q, const float* k, const float* v,
                       float* out, float* att) {
  if (tl_invariant) {
    if (on_cuda()) [[unlikely]]
      no_twin("attention_forward (batch-invariant)");
    return cpu::attention_forward_rows(s, q, k, v, out, att);
  }
  ZF_DISPATCH(attention_forward, s, q, k, v, out, att);
}
void attention_backward(const attention_shape& s, const float* q, const float* k, const float* v,
                        const float* att, const float* dout, float* datt, float* dq, float* dk,
                        float* dv) {
  ZF_DISPATCH(attention_backward, s, q, k, v, att, dout, datt, dq, dk, dv);
}
void paged_kv_write(const float* k_src, const float* v_src, int ld, int n, const int* slot,
                    int kv_dim, float* k, float* v, std::uint16_t* k16, std::uint16_t* v16) {
  ZF_DISPATCH(paged_kv_write, k_src, v_src, ld, n, slot, kv_dim, k, v, k16, v16);
}
long paged_attention_scratch(const paged_shape& s) {
  ZF_DISPATCH(paged_attention_scratch, s);
}
void paged_attention(const paged_shape& s, const float* q, const paged_kv& kv, float* out,
                     float* scratch) {
  ZF_DISPATCH(paged_attention, s, q, kv, out, scratch, tl_invariant);
}

// softmax / cross-entropy
void softmax_xent_fused(float* logits, const int* targets, float* loss, int n, int v, float dloss) {
  ZF_CUDA_FIRST(softmax_xent_fused, logits, targets, loss, n, v, dloss);
  const std::size_t vv = std::size_t(v);
  over_rows(n, v, [&](int r0, int rows) {
    cpu::softmax_xent_fused(logits + r0 * vv, targets + r0, loss + r0, rows, v, dloss);
  });
}
void softmax_xent_forward(const float* logits, const int* targets, float* loss, int n, int v) {
  ZF_CUDA_FIRST(softmax_xent_forward, logits, targets, loss, n, v);
  const std::size_t vv = std::size_t(v);
  over_rows(n, v, [&](int r0, int rows) {
    cpu::softmax_xent_forward(logits + r0 * vv, targets + r0, loss + r0, rows, v);
  });
}
void softmax_rows(float* x, int n, int v, float scale) {
  ZF_CUDA_FIRST(softmax_rows, x, n, v, scale);
  over_rows(n, v,
            [&](int r0, int rows) { cpu::softmax_rows(x + r0 * std::size_t(v), rows, v, scale); });
}
double log_sum_exp(const float* x, int n) {
  ZF_DISPATCH(log_sum_exp, x, n);
}

// moe
void router_scores(const float* z, float* s, int n, int E, bool sigmoid) {
  ZF_CPU_ONLY(router_scores, z, s, n, E, sigmoid);
}
void router_scores_backward(const float* s, const float* ds, float* dz, int n, int E,
                            bool sigmoid) {
  ZF_CPU_ONLY(router_scores_backward, s, ds, dz, n, E, sigmoid);
}
void topk_gates(const float* s, const float* bias, int n, int E, int k, bool normalize, int* sel,
                float* gate) {
  ZF_CPU_ONLY(topk_gates, s, bias, n, E, k, normalize, sel, gate);
}
void topk_gates_backward(const float* s, const int* sel, const float* dgate, int n, int E, int k,
                         bool normalize, float* ds) {
  ZF_CPU_ONLY(topk_gates_backward, s, sel, dgate, n, E, k, normalize, ds);
}
int moe_assign_slots(const int* sel, int n, int E, int k, int capacity, int* slot, int* offsets,
                     int* token, int* counts) {
  ZF_CPU_ONLY(moe_assign_slots, sel, n, E, k, capacity, slot, offsets, token, counts);
}
void moe_gather(const float* x, const int* token, int m, int C, float* dst) {
  ZF_CPU_ONLY(moe_gather, x, token, m, C, dst);
}
void moe_combine(const float* out, const int* slot, const float* gate, int n, int k, int C,
                 float* y) {
  ZF_CPU_ONLY(moe_combine, out, slot, gate, n, k, C, y);
}
void moe_combine_backward(const float* out, const int* slot, const float* gate, const float* d,
                          int n, int k, int C, float* dout, float* dgate) {
  ZF_CPU_ONLY(moe_combine_backward, out, slot, gate, d, n, k, C, dout, dgate);
}
void moe_scatter_add(const float* dxs, const int* slot, int n, int k, int C, float* dx) {
  ZF_CPU_ONLY(moe_scatter_add, dxs, slot, n, k, C, dx);
}
double moe_balance_loss(const float* s, const int* counts, int n, int counted, int E, int k,
                        float* ds, float coef) {
  ZF_CPU_ONLY(moe_balance_loss, s, counts, n, counted, E, k, ds, coef);
}
double moe_z_loss(const float* z, int n, int E, float* dz, float coef) {
  ZF_CPU_ONLY(moe_z_loss, z, n, E, dz, coef);
}

// embedding
void embedding_forward(const int* ids, const float* wte, const float* wpe, float* out, int b, int t,
                       int c, int pos0) {
  ZF_DISPATCH(embedding_forward, ids, wte, wpe, out, b, t, c, pos0);
}
void embedding_backward(const int* ids, const float* dout, float* dwte, float* dwpe, int b, int t,
                        int c, int pos0) {
  ZF_DISPATCH(embedding_backward, ids, dout, dwte, dwpe, b, t, c, pos0);
}

// ggml weight formats (GGUF files read in place)
void ggml_gemm(const ggml_matrix& w, const qgemm_io& io) {
  ZF_DISPATCH(ggml_gemm, w, io);
}

// adamw: the cuda twin exists (kernels/adamw_cuda.cu).
void adamw_step(float* p, const float* g, float* m, float* v, std::size_t n,
                const adamw_params& a) {
  ZF_CUDA_FIRST(adamw_step, p, g, m, v, n, a);
  cpu::parallel_ranges(n, 8, k_parallel_min, [&](std::size_t b, std::size_t e) {
    cpu::adamw_step(p + b, g + b, m + b, v + b, e - b, a);
  });
}
double sum_squares(const float* x, std::size_t n) {
  ZF_DISPATCH(sum_squares, x, n);
}

// CPU threads (OpenBLAS's pool): a host setting, not dispatched.
void set_num_threads(int n) {
  cpu::set_num_threads(n);
}
int num_threads() {
  return cpu::num_threads();
}

// bf16 linear (issue 16): decode rows (and every batch-invariant call) by the direct kernel split
// over the lent threads by outputs; prefill by oneDNN's bf16 matmul. The activations' bf16 parts
// go to per-thread buffers reused across calls, read by the pool's threads through pointers.
void bf16_gemm(const bf16_matrix& w, const qgemm_io& io) {
  ZF_CPU_CHECK(bf16_gemm);
  thread_local std::vector<std::uint16_t> xs;
  if (!tl_invariant && io.m > bf16_direct_rows) {
    xs.resize(std::max(xs.size(), cpu::bf16_split_elems(io.m, w.k, 1)));
    cpu::bf16_split_rows(io.x, io.ldx, io.m, w.k, 1, xs.data());
    return cpu::bf16_gemm_prefill(w, io, xs.data());
  }
  const std::uint16_t* parts = nullptr;
  if (bf16_simd()) {
    xs.resize(std::max(xs.size(), cpu::bf16_split_elems(io.m, w.k, 3)));
    cpu::bf16_split_rows(io.x, io.ldx, io.m, w.k, 3, xs.data());
    parts = xs.data();
  }
  split_outputs(io.m, w.n, w.k,
                [&](int o0, int o1) { cpu::bf16_gemm_direct(w, io, parts, o0, o1); });
}

}  // namespace zf::kernels
