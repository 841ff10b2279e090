// The MoE MLP (moe.hpp; the math in docs/moe.md).
#include "runtime/model/moe.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/matmul.hpp"
#include "kernels/moe.hpp"
#include "runtime/core/seed.hpp"
#include "runtime/model/quant_linear.hpp"

namespace zf::moe {
namespace k = zf::kernels;

namespace {

static_assert(sizeof(int) == sizeof(float), "int arrays are taken from float arenas");

int* take_ints(arena& a, std::size_t n) {
  return reinterpret_cast<int*>(a.take(n));
}

double pad(double n) {
  return std::ceil(n / 16) * 16;
}

}  // namespace

// Mean entropy (nats) of the rows of s [n, E], each normalised to sum 1 (softmax rows already do).
double mean_entropy(const float* s, int n, int E) {
  double total = 0;
  for (int i = 0; i < n; ++i) {
    const float* r = s + std::size_t(i) * E;
    double sum = 0, h = 0;
    for (int e = 0; e < E; ++e) sum += r[e];
    for (int e = 0; e < E; ++e)
      if (r[e] > 0) h -= r[e] / sum * std::log(r[e] / sum);
    total += h;
  }
  return n ? total / n : 0;
}

block::weights expert(const moe_tensors<const float>& m, int e) {
  block::weights b;
  b.up_w = m.expert_up_w(e);
  b.up_b = m.expert_up_b(e);
  b.down_w = m.expert_down_w(e);
  b.down_b = m.expert_down_b(e);
  return b;
}

block::weights expert(const block::weights& w, int e) {
  block::weights b = expert(w.moe, e);
  if (w.quant && w.quant->experts) b.quant = &w.quant->experts[e];
  return b;
}

block::grads expert(const moe_tensors<float>& m, int e) {
  block::grads b;
  b.up_w = m.expert_up_w(e);
  b.up_b = m.expert_up_b(e);
  b.down_w = m.expert_down_w(e);
  b.down_b = m.expert_down_b(e);
  return b;
}

float jitter_factor(double eps, uint64_t seed, int row, int col) {
  const uint64_t h = splitmix64(seed ^ splitmix64((uint64_t(uint32_t(row)) << 32) | uint32_t(col)));
  const double u = double(h >> 11) * 0x1p-53;
  return float(1.0 + eps * (2.0 * u - 1.0));
}

namespace {

// out [n, C] = in scaled by the layer's jitter factors (out may be in).
void jitter_rows(const layer_state& st, const float* in, int n, int C, float* out) {
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < C; ++c) {
      const std::size_t o = std::size_t(i) * C + c;
      out[o] = in[o] * jitter_factor(st.jitter, st.jitter_seed, st.jitter_row0 + i, c);
    }
}

}  // namespace

void update_router_bias(double rate, const std::vector<double>& counts, int e0, int e1, float* b) {
  double mean = 0;
  for (double c : counts) mean += c;
  mean /= double(std::max<std::size_t>(1, counts.size()));
  for (int e = e0; e < e1; ++e) {
    const double d = mean - counts[std::size_t(e)];
    b[e - e0] += float(d > 0 ? rate : d < 0 ? -rate : 0.0);
  }
}

void route(const model_spec& s, const block::weights& w, const float* ln2, int n, layer_state& st,
           const scratch& sc) {
  const int C = s.hidden, E = w.moe.n_experts, K = s.moe.top_k;
  const float* in = ln2;
  if (st.jitter > 0) {
    jitter_rows(st, ln2, n, C, sc.xj);
    in = sc.xj;
  }
  k::gemm(false, false, n, E, C, 1.0f, in, C, w.moe.router_w, E, 0.0f, st.z, E);
  k::router_scores(st.z, st.s, n, E, s.moe.router == moe_router::sigmoid);
  k::topk_gates(st.s, w.moe.router_b, n, E, K, K > 1 && s.moe.norm_topk, st.sel, st.gate);
  if (s.moe.gate_scale != 1.0) {
    const float g = float(s.moe.gate_scale);
    for (std::size_t i = 0; i < std::size_t(n) * K; ++i) st.gate[i] *= g;
  }
  st.n = n;
}

void router_backward(const model_spec& s, const block::weights& w, const block::grads& g,
                     const float* ln2, const layer_state& st, const scratch& sc, float aux_scale,
                     float* dln2) {
  const int n = st.n, C = s.hidden, E = w.moe.n_experts, K = s.moe.top_k;
  float* ds = sc.ds;
  std::memset(ds, 0, sizeof(float) * std::size_t(n) * E);
  if (s.moe.gate_scale != 1.0) {  // the gates were the top-k gates times gate_scale
    const float g = float(s.moe.gate_scale);
    for (std::size_t i = 0; i < std::size_t(n) * K; ++i) sc.dgate[i] *= g;
  }
  k::topk_gates_backward(st.s, st.sel, sc.dgate, n, E, K, K > 1 && s.moe.norm_topk, ds);
  k::moe_balance_loss(st.s, st.counts, n, st.counted, E, K, ds,
                      float(s.moe.aux_loss_coef * aux_scale));
  k::router_scores_backward(st.s, ds, ds, n, E, s.moe.router == moe_router::sigmoid);
  k::moe_z_loss(st.z, n, E, ds, float(s.moe.z_loss_coef * aux_scale));
  if (st.jitter <= 0) {
    k::gemm(false, true, n, C, E, 1.0f, ds, E, w.moe.router_w, E, 1.0f, dln2, C);
    k::gemm(true, false, C, E, n, 1.0f, ln2, C, ds, E, 1.0f, g.moe.router_w, E);
    return;
  }
  // The router read x' = ln2 * f: dW = x'^T ds, dln2 += (ds W^T) * f.
  jitter_rows(st, ln2, n, C, sc.xj);
  k::gemm(true, false, C, E, n, 1.0f, sc.xj, C, ds, E, 1.0f, g.moe.router_w, E);
  k::gemm(false, true, n, C, E, 1.0f, ds, E, w.moe.router_w, E, 0.0f, sc.xj, C);
  jitter_rows(st, sc.xj, n, C, sc.xj);
  for (std::size_t i = 0; i < std::size_t(n) * C; ++i) dln2[i] += sc.xj[i];
}

void step_stats::add(const step_stats& o) {
  if (o.layers.empty()) return;
  if (layers.empty()) {
    *this = o;
    return;
  }
  for (std::size_t i = 0; i < layers.size() && i < o.layers.size(); ++i) {
    layer& a = layers[i];
    const layer& b = o.layers[i];
    a.forwards += b.forwards;
    a.tokens += b.tokens;
    a.dropped += b.dropped;
    a.balance += b.balance;
    a.z_loss += b.z_loss;
    a.entropy += b.entropy;
    for (std::size_t e = 0; e < a.counts.size() && e < b.counts.size(); ++e)
      a.counts[e] += b.counts[e];
  }
}

// [layers, then per layer: layer, forwards, tokens, dropped, balance, z_loss, entropy, E,
// counts...]
std::vector<double> step_stats::pack() const {
  std::vector<double> v{double(layers.size())};
  for (const layer& l : layers) {
    v.insert(v.end(), {double(l.layer), l.forwards, l.tokens, l.dropped, l.balance, l.z_loss,
                       l.entropy, double(l.counts.size())});
    v.insert(v.end(), l.counts.begin(), l.counts.end());
  }
  return v;
}

step_stats step_stats::unpack(const std::vector<double>& v) {
  step_stats s;
  std::size_t i = 0;
  auto next = [&] { return i < v.size() ? v[i++] : 0.0; };
  const int n = int(next());
  for (int k = 0; k < n; ++k) {
    layer l;
    l.layer = int(next());
    l.forwards = next();
    l.tokens = next();
    l.dropped = next();
    l.balance = next();
    l.z_loss = next();
    l.entropy = next();
    l.counts.resize(std::size_t(next()));
    for (double& c : l.counts) c = next();
    s.layers.push_back(std::move(l));
  }
  return s;
}

void lay_out(arena& a, const model_spec& s, int E, int n, layer_state& st) {
  const std::size_t N = std::size_t(n), K = std::size_t(s.moe.top_k);
  st.z = a.take(N * E);
  st.s = a.take(N * E);
  st.gate = a.take(N * K);
  st.sel = take_ints(a, N * K);
  st.slot = take_ints(a, N * K);
  st.token = take_ints(a, N * K);
  st.offsets = take_ints(a, std::size_t(E) + 1);
  st.counts = take_ints(a, std::size_t(E));
  st.h = a.take(N * K * s.expert_up_dim());
  st.out = a.take(N * K * s.hidden);
}

double state_floats(const model_spec& s, int E, int n) {
  const double N = n, K = s.moe.top_k;
  return 2 * pad(N * E) + 4 * pad(N * K) + pad(E + 1.0) + pad(E) + pad(N * K * s.expert_up_dim()) +
         pad(N * K * s.hidden);
}

void lay_out(arena& a, const model_spec& s, int n, bool train, scratch& sc, int rows) {
  const std::size_t N = std::size_t(n), K = std::size_t(s.moe.top_k);
  const std::size_t R = rows > 0 ? std::size_t(rows) : N * K;
  sc.xs = a.take(R * s.hidden);
  sc.a = a.take(R * s.moe.expert_intermediate);
  if (!train) return;
  sc.dh = a.take(R * s.expert_up_dim());
  sc.dout = a.take(R * s.hidden);
  sc.ds = a.take(N * s.moe.max_experts());
  sc.dgate = a.take(N * K);
  if (s.moe.jitter > 0) sc.xj = a.take(N * s.hidden);
}

double scratch_floats(const model_spec& s, int n, bool train, int rows) {
  const double N = n, K = s.moe.top_k, R = rows > 0 ? rows : N * K;
  double f = pad(R * s.hidden) + pad(R * s.moe.expert_intermediate);
  if (train)
    f += pad(R * s.expert_up_dim()) + pad(R * s.hidden) + pad(N * s.moe.max_experts()) +
         pad(N * K) + (s.moe.jitter > 0 ? pad(N * s.hidden) : 0);
  return f;
}

int capacity(const moe_spec& m, int n, int E, double factor) {
  if (m.dropless || factor <= 0) return -1;
  const double c = std::ceil(((factor * n) * m.top_k) / E);
  const double cap = std::min<double>(n, std::max<double>(m.min_capacity, c));
  return static_cast<int>(cap);
}

model_spec expert_spec(const model_spec& s) {
  model_spec e = s;
  e.intermediate = s.moe.expert_intermediate;
  e.moe = moe_spec{};
  return e;
}

void forward(const model_spec& s, const model_spec& es, const block::weights& w, const float* ln2,
             int n, int cap, layer_state& st, const scratch& sc, float* x, bool figures) {
  const int C = s.hidden, E = w.moe.n_experts, K = s.moe.top_k, Ue = s.expert_up_dim();
  route(s, w, ln2, n, st, sc);
  st.counted = n;
  st.parallel = false;
  st.rows = k::moe_assign_slots(st.sel, n, E, K, cap, st.slot, st.offsets, st.token, st.counts);
  st.dropped = n * K - st.rows;
  if (figures) {
    st.balance = k::moe_balance_loss(st.s, st.counts, n, n, E, K, nullptr, 0.0f);
    st.z_loss = k::moe_z_loss(st.z, n, E, nullptr, 0.0f);
    st.entropy = mean_entropy(st.s, n, E);
  }
  k::moe_gather(ln2, st.token, st.rows, C, sc.xs);
  for (int e = 0; e < E; ++e) {
    const int r0 = st.offsets[e], m = st.offsets[e + 1] - r0;
    if (m == 0) continue;
    block::mlp_forward(es, expert(w, e), sc.xs + std::size_t(r0) * C, st.h + std::size_t(r0) * Ue,
                       sc.a, nullptr, st.out + std::size_t(r0) * C, m);
  }
  k::moe_combine(st.out, st.slot, st.gate, n, K, C, x);
}

void backward(const model_spec& s, const model_spec& es, const block::weights& w,
              const block::grads& g, const float* ln2, const layer_state& st, const scratch& sc,
              const float* d, float aux_scale, float* dln2) {
  const int n = st.n, C = s.hidden, E = w.moe.n_experts, K = s.moe.top_k, Ue = s.expert_up_dim();
  // Gates and experts: dout rows = gate * d, dgate = d . out.
  k::moe_combine_backward(st.out, st.slot, st.gate, d, n, K, C, sc.dout, sc.dgate);
  k::moe_gather(ln2, st.token, st.rows, C, sc.xs);  // the experts' inputs again
  for (int e = 0; e < E; ++e) {
    const int r0 = st.offsets[e], m = st.offsets[e + 1] - r0;
    if (m == 0) continue;
    float* dx = sc.dout + std::size_t(r0) * C;  // d(out) in, d(input) out (mlp_backward allows it)
    block::mlp_backward(es, expert(w.moe, e), expert(g.moe, e), sc.xs + std::size_t(r0) * C,
                        st.h + std::size_t(r0) * Ue, sc.a, dx, sc.dh, dx, m);
  }
  k::moe_scatter_add(sc.dout, st.slot, n, K, C, dln2);
  router_backward(s, w, g, ln2, st, sc, aux_scale, dln2);
}

}  // namespace zf::moe
