// Serving weights in bf16 (lm_bf16.hpp).
#include "runtime/model/lm_bf16.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/convert.hpp"
#include "runtime/core/error.hpp"

namespace zf {
namespace {

using sz = std::size_t;

// The matrices bf16 replaces, as ranges of w.store: [offset, offset + count) in floats, with
// their shapes (k inputs, n outputs) and strides. Order: qkv, o, up, down per layer (an MoE
// layer without a dense MLP: empty slots, count 0, for up and down), then the head; the experts'
// up and down projections (expert_slots) in layer, then expert order.
struct matrix_slot {
  sz offset = 0, count = 0;
  const float* w = nullptr;
  sz stride_k = 0, stride_n = 0;
  int k = 0, n = 0;
};

matrix_slot conv1d(const lm_weights& w, const float* p, int k, int n) {  // [in, out]
  return {sz(p - w.store.data()), sz(k) * n, p, sz(n), 1, k, n};
}

std::vector<matrix_slot> matrix_slots(const lm_weights& w) {
  const model_spec& c = w.cfg;
  std::vector<matrix_slot> out;
  for (const lm_layer& L : w.layers) {
    out.push_back(conv1d(w, L.qkv_w, c.hidden, c.qkv_dim()));
    out.push_back(conv1d(w, L.o_w, c.q_dim(), c.hidden));
    out.push_back(L.up_w ? conv1d(w, L.up_w, c.hidden, c.up_dim()) : matrix_slot{});
    out.push_back(L.down_w ? conv1d(w, L.down_w, c.intermediate, c.hidden) : matrix_slot{});
  }
  // the head [V, C] (out, in): rows are already bf16_linear's
  out.push_back({sz(w.head - w.store.data()), sz(c.vocab_size) * c.hidden, w.head, 1, sz(c.hidden),
                 c.hidden, c.vocab_size});
  return out;
}

std::vector<matrix_slot> expert_slots(const lm_weights& w) {
  const model_spec& c = w.cfg;
  std::vector<matrix_slot> out;
  for (const lm_layer& L : w.layers)
    for (int e = 0; e < L.moe.n_experts; ++e) {
      out.push_back(conv1d(w, L.moe.expert_up_w(e), c.hidden, c.expert_up_dim()));
      out.push_back(conv1d(w, L.moe.expert_down_w(e), c.moe.expert_intermediate, c.hidden));
    }
  return out;
}

quant_linear bf16_of(const matrix_slot& s) {
  return s.count ? bf16_linear_of(s.w, s.stride_k, s.stride_n, s.k, s.n) : quant_linear{};
}

bool tied(const lm_weights& w) {
  return w.head == w.tok_emb;
}

void check_convertible(const lm_weights& w, const std::string& option) {
  if (w.quant && w.quant->scheme != "bf16")
    fail(
        "{}: the model's linears are already quantized ({}, {}); another dtype applies to fp32 "
        "weights only: serve this model with --dtype fp32",
        option, w.quant->scheme, w.quant->method);
  if (w.layers.size() != sz(w.cfg.n_layer) || !w.head || w.store.size() == 0)
    fail("{}: incomplete weights ({} layers of {}, head or store missing)", option, w.layers.size(),
         w.cfg.n_layer);
}

// Zeroes floats [off, off + count) of store, giving their whole pages back to the kernel where
// the store is mapped (fbuffer maps buffers of k_lazy_zero_bytes and more: zero pages on read).
void release(fbuffer& store, sz off, sz count) {
  float* p = store.data() + off;
  const sz bytes = (store.size() * sizeof(float) + k_align - 1) / k_align * k_align;
  if (bytes < k_lazy_zero_bytes) return (void)std::memset(p, 0, count * sizeof(float));
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<std::uintptr_t>(p), b = a + count * sizeof(float);
  const std::uintptr_t pa = (a + page - 1) / page * page, pb = b / page * page;
  if (pa >= pb) return (void)std::memset(p, 0, count * sizeof(float));
  std::memset(p, 0, pa - a);
  std::memset(reinterpret_cast<void*>(pb), 0, b - pb);
  if (::madvise(reinterpret_cast<void*>(pa), pb - pa, MADV_DONTNEED) != 0)
    std::memset(reinterpret_cast<void*>(pa), 0, pb - pa);
}

// q attached to w and the fp32 slots it replaces released (a tied head's table stays).
void attach_released(lm_weights& w, std::shared_ptr<lm_quant> q) {
  const bool keep_head = tied(w);  // the embedding table stays fp32
  const auto slots = matrix_slots(w);
  for (sz i = 0; i < slots.size(); ++i)
    if ((i + 1 < slots.size() || !keep_head) && slots[i].count)
      release(w.store, slots[i].offset, slots[i].count);
  for (const matrix_slot& s : expert_slots(w)) release(w.store, s.offset, s.count);
  attach_quant(w, std::move(q));
}

// A copy of w's fp32 tensors that q does not replace, with q attached.
std::shared_ptr<const lm_weights> copy_with(const lm_weights& w, std::shared_ptr<lm_quant> q) {
  // Only what stays fp32 is copied: the new store's matrix slots are never written (zero pages
  // where the store is mapped).
  auto slots = matrix_slots(w);
  if (tied(w)) slots.pop_back();
  std::erase_if(slots, [](const matrix_slot& s) { return s.count == 0; });
  for (const matrix_slot& s : expert_slots(w)) slots.push_back(s);
  std::sort(slots.begin(), slots.end(),
            [](const matrix_slot& a, const matrix_slot& b) { return a.offset < b.offset; });
  fbuffer store(w.store.size());
  sz at = 0;
  for (const matrix_slot& s : slots) {
    std::memcpy(store.data() + at, w.store.data() + at, (s.offset - at) * sizeof(float));
    at = s.offset + s.count;
  }
  std::memcpy(store.data() + at, w.store.data() + at, (w.store.size() - at) * sizeof(float));
  lm_weights c = make_lm_weights(w.cfg, std::move(store));
  attach_quant(c, std::move(q));
  return std::make_shared<const lm_weights>(std::move(c));
}

}  // namespace

weight_dtype parse_weight_dtype(const std::string& s, const std::string& option) {
  if (s == "fp32") return weight_dtype::fp32;
  if (s == "bf16") return weight_dtype::bf16;
  if (s == "f16") return weight_dtype::f16;
  if (s == "q8_0") return weight_dtype::q8_0;
  if (s == "q4_0") return weight_dtype::q4_0;
  fail("{}: expected fp32, bf16, f16, q8_0 or q4_0, got '{}'", option, s);
}

bool ggml_format_of(weight_dtype d, kernels::ggml_format& f) {
  switch (d) {
    case weight_dtype::f16:
      return f = kernels::ggml_format::f16, true;
    case weight_dtype::q8_0:
      return f = kernels::ggml_format::q8_0, true;
    case weight_dtype::q4_0:
      return f = kernels::ggml_format::q4_0, true;
    default:
      return false;
  }
}

std::shared_ptr<lm_quant> ggml_quant_of(const lm_weights& w, kernels::ggml_format f,
                                        const std::string& option) {
  check_convertible(w, option);
  if (w.quant) fail("{}: the weights carry {} linears already", option, w.quant->scheme);
  for (const lm_layer& L : w.layers)
    if (L.moe.n_experts)
      fail(
          "{}: MoE experts are not held in ggml formats; serve MoE models with --dtype fp32 or "
          "bf16",
          option);
  const char* name = kernels::ggml_info(f).name;
  const auto slots = matrix_slots(w);
  sz total = 0;
  for (const matrix_slot& s : slots) {
    if (!s.count) continue;
    if (s.k % kernels::ggml_block_size(f))
      fail("{}: a matrix with {} inputs is not whole {}-element blocks of {}", option, s.k,
           kernels::ggml_block_size(f), name);
    total += kernels::row_bytes(f, s.k) * sz(s.n);
  }
  // One buffer for every matrix (the linears point into it; lm_quant::owner keeps it).
  auto buf = std::make_shared<std::vector<std::uint8_t>>(total);
  auto q = std::make_shared<lm_quant>();
  q->scheme = "gguf";
  q->method = fmt::format("{} x {}", name, slots.size());
  q->owner = buf;
  sz at = 0;
  std::vector<float> rows;
  auto linear_of = [&](const matrix_slot& s) {
    quant_linear ql;
    if (!s.count) return ql;
    const sz rb = kernels::row_bytes(f, s.k);
    std::uint8_t* dst = buf->data() + at;
    // 64 outputs at a time gathered into [64, k] rows: a Conv1D matrix read along its rows.
    constexpr int t = 64;
    rows.resize(sz(t) * sz(s.k));
    for (int o0 = 0; o0 < s.n; o0 += t) {
      const int m = std::min(t, s.n - o0);
      for (int j = 0; j < s.k; ++j)
        for (int o = 0; o < m; ++o)
          rows[sz(o) * sz(s.k) + sz(j)] = s.w[sz(j) * s.stride_k + sz(o0 + o) * s.stride_n];
      kernels::ggml_quantize_rows(f, rows.data(), 0, m, s.k, dst + sz(o0) * rb);
    }
    ql.k = s.k;
    ql.n = s.n;
    ql.group = s.k;
    ql.ggml = {f, s.n, s.k, dst};
    at += rb * sz(s.n);
    return ql;
  };
  q->linears.reserve(slots.size() - 1);
  for (sz i = 0; i + 1 < slots.size(); ++i) q->linears.push_back(linear_of(slots[i]));
  q->head = std::make_unique<quant_linear>(linear_of(slots.back()));
  for (const lm_layer& L : w.layers) q->layer_experts.push_back(L.moe.n_experts);
  q->link();
  return q;
}

quant_linear bf16_linear_of(const float* w, sz stride_k, sz stride_n, int k, int n) {
  quant_linear q;
  q.k = k;
  q.n = n;
  q.group = k;
  q.bf16.resize(sz(k) * n);
  // Tiles of 64 x 64 keep a Conv1D matrix's transposition within the cache.
  constexpr int t = 64;
  for (int o0 = 0; o0 < n; o0 += t)
    for (int j0 = 0; j0 < k; j0 += t)
      for (int o = o0; o < std::min(n, o0 + t); ++o)
        for (int j = j0; j < std::min(k, j0 + t); ++j)
          q.bf16[sz(o) * k + j] = kernels::f32_to_bf16(w[sz(j) * stride_k + sz(o) * stride_n]);
  return q;
}

std::shared_ptr<lm_quant> bf16_quant_of(const lm_weights& w) {
  if (w.quant) fail("bf16_quant_of: the weights carry {} linears already", w.quant->scheme);
  check_convertible(w, "bf16");
  auto q = std::make_shared<lm_quant>();
  q->scheme = "bf16";
  q->method = "rne";
  const auto slots = matrix_slots(w);
  q->linears.reserve(slots.size() - 1);
  for (sz i = 0; i + 1 < slots.size(); ++i) q->linears.push_back(bf16_of(slots[i]));
  q->head = std::make_unique<quant_linear>(bf16_of(slots.back()));
  for (const matrix_slot& s : expert_slots(w)) q->expert_linears.push_back(bf16_of(s));
  for (const lm_layer& L : w.layers) q->layer_experts.push_back(L.moe.n_experts);
  q->link();
  return q;
}

bool is_bf16(const lm_weights& w) {
  return w.quant && w.quant->scheme == "bf16";
}

void to_serving_weights(lm_weights& w, weight_dtype d, const std::string& option) {
  if (d == weight_dtype::fp32) return;
  if (d == weight_dtype::bf16) return to_bf16_weights(w, option);
  kernels::ggml_format f{};
  ggml_format_of(d, f);
  attach_released(w, ggml_quant_of(w, f, option));
}

void to_bf16_weights(lm_weights& w, const std::string& option) {
  if (is_bf16(w)) return;
  check_convertible(w, option);
  attach_released(w, bf16_quant_of(w));
}

std::shared_ptr<const lm_weights> serving_weights_of(const lm_weights& w, weight_dtype d,
                                                     const std::string& option) {
  if (d == weight_dtype::bf16) return bf16_weights_of(w, option);
  kernels::ggml_format f{};
  if (!ggml_format_of(d, f)) fail("{}: fp32 weights need no conversion", option);
  return copy_with(w, ggml_quant_of(w, f, option));
}

std::shared_ptr<const lm_weights> bf16_weights_of(const lm_weights& w, const std::string& option) {
  check_convertible(w, option);
  if (is_bf16(w)) {  // the same bf16 linears (shared), the fp32 tensors copied
    lm_weights c = copy_lm_weights(w.cfg, w.store.data());
    attach_quant(c, w.quant);
    return std::make_shared<const lm_weights>(std::move(c));
  }
  return copy_with(w, bf16_quant_of(w));
}

}  // namespace zf
