// oneDNN behind the matmul family: f32 and bf16 matmul primitives and the f32 -> bf16 reorder.
// Creating a primitive costs a JIT compile (0.1-10 ms), so each thread keeps the ones it has
// made, keyed by everything that shapes them (types, transposes, sizes, leading dimensions,
// alpha and beta); the buffers are bound at execution, so one primitive serves every call of its
// shape. The cache is cleared when it passes k_cache_max entries (serving's prefill sees many row
// counts), so it never grows without bound.
#include <cstring>
#include <dnnl.hpp>
#include <unordered_map>

#include "kernels/dispatch.hpp"
#include "kernels/gemm_backends.hpp"

namespace zf::kernels::cpu::backend {
namespace {

using dt = dnnl::memory::data_type;
constexpr std::size_t k_cache_max = 256;

struct prim_key {
  int kind;     // 0 f32 matmul, 1 bf16 matmul, 2 f32 -> bf16 reorder
  int threads;  // planned for (1 inside an OpenMP team: the same thread plans both ways)
  int ta, tb;   // all members 4 bytes: no padding, so memcmp and the byte hash see only values
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
  bool operator==(const prim_key& o) const { return std::memcmp(this, &o, sizeof *this) == 0; }
};
// A batched matmul (onednn_batched): strides {batch, row, col} of a, b and c in elements.
struct batched_key {
  std::int64_t as[3], bs[3], cs[2];
  int kind, threads, batch, m, n, k;  // kind 0 f32, 1 bf16; an even count of ints: no padding
  float alpha, beta;
  bool operator==(const batched_key& o) const { return std::memcmp(this, &o, sizeof *this) == 0; }
};
struct prim_hash {
  template <class Key>
  std::size_t operator()(const Key& p) const noexcept {
    std::size_t h = 1469598103934665603ull;
    const auto* b = reinterpret_cast<const unsigned char*>(&p);
    for (std::size_t i = 0; i < sizeof p; ++i) h = (h ^ b[i]) * 1099511628211ull;
    return h;
  }
};
struct prim_entry {
  dnnl::primitive prim;
  dnnl::memory::desc a, b, c;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct thread_state {
  dnnl::stream stream{cpu_engine()};
  std::unordered_map<prim_key, prim_entry, prim_hash> cache;
  std::unordered_map<batched_key, prim_entry, prim_hash> batched;
  std::unordered_map<batched_key, prim_entry, prim_hash> copies;  // onednn_copy3 (kind 2..5)
};
thread_state& state() {
  thread_local thread_state s;
  return s;
}

// The stored matrix of op(x) [rows, cols] with row stride ld: transposed means x is held as
// [cols, rows], i.e. strides {1, ld} of the logical [rows, cols].
dnnl::memory::desc matrix(int rows, int cols, int ld, bool trans, dt t) {
  const dnnl::memory::dims st = trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, t, st);
}

dnnl::primitive_attr scaled(float alpha, float beta) {
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  return attr;
}

prim_entry& matmul_for(const prim_key& key) {
  auto& cache = state().cache;
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= k_cache_max) cache.clear();
  const dt t = key.kind == 1 ? dt::bf16 : dt::f32;
  prim_entry e;
  e.a = matrix(key.m, key.k, key.lda, key.ta, t);
  e.b = matrix(key.k, key.n, key.ldb, key.tb, t);
  e.c = matrix(key.m, key.n, key.ldc, false, dt::f32);
  try {
    e.prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(e.a, e.b, e.c),
                                                       scaled(key.alpha, key.beta), cpu_engine()));
  } catch (const dnnl::error& err) {
    throw kernel_error(std::string("oneDNN matmul ") + (key.kind == 1 ? "bf16" : "f32") + " " +
                       std::to_string(key.m) + "x" + std::to_string(key.n) + "x" +
                       std::to_string(key.k) + ": " + err.what());
  }
  return cache.emplace(key, std::move(e)).first->second;
}

void run_matmul(const prim_key& key, const void* a, const void* b, float* c) {
  prim_entry& e = matmul_for(key);
  auto& eng = cpu_engine();
  dnnl::memory am(e.a, eng, const_cast<void*>(a)), bm(e.b, eng, const_cast<void*>(b)),
      cm(e.c, eng, c);
  auto& s = state().stream;
  e.prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  s.wait();
}

}  // namespace

void onednn_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                  const float* b, int ldb, float beta, float* c, int ldc) {
  const int t = sync_library_threads();
  run_matmul({0, t, ta, tb, m, n, k, lda, ldb, ldc, alpha, beta}, a, b, c);
}

void onednn_bf16(bool ta, bool tb, int m, int n, int k, float alpha, const std::uint16_t* a,
                 int lda, const std::uint16_t* b, int ldb, float beta, float* c, int ldc) {
  const int t = sync_library_threads();
  run_matmul({1, t, ta, tb, m, n, k, lda, ldb, ldc, alpha, beta}, a, b, c);
}

void onednn_batched(bool bf16, int batch, int m, int n, int k, float alpha, strided a, strided b,
                    float beta, float* c, std::int64_t c_batch, std::int64_t c_row) {
  const int t = sync_library_threads();
  const batched_key key{{a.batch, a.row, a.col},
                        {b.batch, b.row, b.col},
                        {c_batch, c_row},
                        bf16 ? 1 : 0,
                        t,
                        batch,
                        m,
                        n,
                        k,
                        alpha,
                        beta};
  auto& cache = state().batched;
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() >= k_cache_max) cache.clear();
    const dt ty = bf16 ? dt::bf16 : dt::f32;
    prim_entry e;
    e.a = dnnl::memory::desc({batch, m, k}, ty, {a.batch, a.row, a.col});
    e.b = dnnl::memory::desc({batch, k, n}, ty, {b.batch, b.row, b.col});
    e.c = dnnl::memory::desc({batch, m, n}, dt::f32, {c_batch, c_row, 1});
    try {
      e.prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(e.a, e.b, e.c),
                                                         scaled(alpha, beta), cpu_engine()));
    } catch (const dnnl::error& err) {
      throw kernel_error(std::string("oneDNN batched matmul ") + (bf16 ? "bf16 " : "f32 ") +
                         std::to_string(batch) + "x" + std::to_string(m) + "x" + std::to_string(n) +
                         "x" + std::to_string(k) + ": " + err.what());
    }
    it = cache.emplace(key, std::move(e)).first;
  }
  auto& eng = cpu_engine();
  dnnl::memory am(it->second.a, eng, const_cast<void*>(a.data)),
      bm(it->second.b, eng, const_cast<void*>(b.data)), cm(it->second.c, eng, c);
  auto& s = state().stream;
  it->second.prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  s.wait();
}

void onednn_copy3(const std::int64_t dims[3], const void* src, bool src_bf16,
                  const std::int64_t src_strides[3], void* dst, bool dst_bf16,
                  const std::int64_t dst_strides[3]) {
  const int t = sync_library_threads();
  const batched_key key{{src_strides[0], src_strides[1], src_strides[2]},
                        {dst_strides[0], dst_strides[1], dst_strides[2]},
                        {0, 0},
                        2 + (src_bf16 ? 1 : 0) + (dst_bf16 ? 2 : 0),
                        t,
                        static_cast<int>(dims[0]),
                        static_cast<int>(dims[1]),
                        static_cast<int>(dims[2]),
                        0,
                        1.0f,
                        0.0f};
  auto& cache = state().copies;
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() >= k_cache_max) cache.clear();
    const dnnl::memory::dims d{dims[0], dims[1], dims[2]};
    prim_entry e;
    e.a = dnnl::memory::desc(d, src_bf16 ? dt::bf16 : dt::f32,
                             {src_strides[0], src_strides[1], src_strides[2]});
    e.c = dnnl::memory::desc(d, dst_bf16 ? dt::bf16 : dt::f32,
                             {dst_strides[0], dst_strides[1], dst_strides[2]});
    e.prim = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), e.a, cpu_engine(), e.c));
    it = cache.emplace(key, std::move(e)).first;
  }
  auto& eng = cpu_engine();
  dnnl::memory in(it->second.a, eng, const_cast<void*>(src)), out(it->second.c, eng, dst);
  auto& s = state().stream;
  it->second.prim.execute(s, {{DNNL_ARG_FROM, in}, {DNNL_ARG_TO, out}});
  s.wait();
}

void onednn_to_bf16(const float* src, int rows, int cols, int ld, std::uint16_t* dst) {
  const int t = sync_library_threads();
  const prim_key key{2, t, false, false, rows, cols, 0, ld, 0, 0, 1.0f, 0.0f};
  auto& cache = state().cache;
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() >= k_cache_max) cache.clear();
    prim_entry e;
    e.a = matrix(rows, cols, ld, false, dt::f32);
    e.c = matrix(rows, cols, cols, false, dt::bf16);
    e.prim = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), e.a, cpu_engine(), e.c));
    it = cache.emplace(key, std::move(e)).first;
  }
  auto& eng = cpu_engine();
  dnnl::memory in(it->second.a, eng, const_cast<float*>(src)), out(it->second.c, eng, dst);
  auto& s = state().stream;
  it->second.prim.execute(s, {{DNNL_ARG_FROM, in}, {DNNL_ARG_TO, out}});
  s.wait();
}

}  // namespace zf::kernels::cpu::backend
