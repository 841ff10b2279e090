// MoE layers routed over a data-parallel group with expert parallelism (moe_parallel.hpp).
// Every rank computes the same global assignment from everyone's selections, so the plan of who
// sends which rows to whom needs no further messages: rank s sends rank q, for q's experts in
// order and each expert's kept choices in priority order, the rows of its own tokens; q keeps
// them source-major as received and reads them expert-major through perm.
#include "runtime/model/moe_parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/moe.hpp"
#include "runtime/core/error.hpp"

namespace zf::moe {
namespace k = zf::kernels;

namespace {

int* take_ints(arena& a, std::size_t n) {
  return reinterpret_cast<int*>(a.take(n));
}

double pad(double n) {
  return std::ceil(n / 16) * 16;
}

// out[q] = in[perm[q]] (rows of C) for q < m, and its inverse.
void permute_in(const float* in, const int* perm, int m, int C, float* out) {
  k::moe_gather(in, perm, m, C, out);
}
void permute_out(const float* in, const int* perm, int m, int C, float* out) {
  for (int q = 0; q < m; ++q)
    std::memcpy(out + std::size_t(perm[q]) * C, in + std::size_t(q) * C, sizeof(float) * C);
}

// Rows -> floats per rank.
void to_floats(const int* rows, int W, int C, std::vector<std::size_t>& out) {
  out.resize(std::size_t(W));
  for (int r = 0; r < W; ++r) out[std::size_t(r)] = std::size_t(rows[r]) * C;
}

}  // namespace

int rows_max(const model_spec& s, int E, int n, int world, int ep) {
  const int64_t all = int64_t(ep) * n * s.moe.top_k;
  // training and evaluation forwards both route over the group: room for the larger capacity
  const int cap =
      capacity(s.moe, n * world, E, std::max(s.moe.capacity_factor, s.moe.eval_capacity_factor));
  const int64_t capped = cap < 0 ? all : int64_t(E / ep) * cap;
  return int(std::min(all, capped));
}

int expert_rows(const model_spec& s, int n, int world, int ep) {
  int rows = n * s.moe.top_k;
  if (world > 1)
    for (int l = 0; l < s.n_layer; ++l)
      if (const int E = s.moe.experts_of(l)) rows = std::max(rows, rows_max(s, E, n, world, ep));
  return rows;
}

void lay_out(arena& a, const model_spec& s, int E, int n, int world, int ep, parallel_state& ps) {
  const std::size_t R = std::size_t(rows_max(s, E, n, world, ep));
  ps.send_rows = take_ints(a, std::size_t(world));
  ps.recv_rows = take_ints(a, std::size_t(world));
  ps.perm = take_ints(a, R);
  ps.loffsets = take_ints(a, std::size_t(E / ep) + 1);
  ps.xs = a.take(R * s.hidden);
  ps.h = a.take(R * s.expert_up_dim());
}

void lay_out(arena& a, const model_spec& s, int n, int world, int ep, parallel_scratch& sc) {
  const int E = s.moe.max_experts();
  const std::size_t nk = std::size_t(n) * s.moe.top_k, Nk = nk * world;
  std::size_t R = 0;
  for (int l = 0; l < s.n_layer; ++l)
    if (const int e = s.moe.experts_of(l))
      R = std::max<std::size_t>(R, rows_max(s, e, n, world, ep));
  sc.mine = a.take(nk);  // the order parallel_floats counts
  sc.gsel = a.take(Nk);
  sc.gsel_i = take_ints(a, Nk);
  sc.gslot = take_ints(a, Nk);
  sc.gtoken = take_ints(a, Nk);
  sc.goffsets = take_ints(a, std::size_t(E) + 1);
  sc.cnt = take_ints(a, std::size_t(E));
  sc.send_token = take_ints(a, nk);
  sc.sendbuf = a.take(nk * s.hidden);
  sc.recvbuf = a.take(R * s.hidden);
  sc.expert_out = a.take(R * s.hidden);
  sc.send.reserve(std::size_t(world));
  sc.recv.reserve(std::size_t(world));
  sc.sums.reserve(std::size_t(E) + 2);
}

double parallel_floats(const model_spec& s, int n, int world, int ep) {
  const int E = s.moe.max_experts();
  const double nk = double(n) * s.moe.top_k, Nk = nk * world;
  double f = 0, R = 0;
  for (int l = 0; l < s.n_layer; ++l) {
    const int e = s.moe.experts_of(l);
    if (!e) continue;
    const double r = rows_max(s, e, n, world, ep);
    R = std::max(R, r);
    f += 2 * pad(world) + pad(r) + pad(e / ep + 1.0) + pad(r * s.hidden) +
         pad(r * s.expert_up_dim());
  }
  return f + 2 * pad(nk) + 4 * pad(Nk) + pad(E + 1.0) + pad(E) + pad(nk * s.hidden) +
         2 * pad(R * s.hidden);
}

namespace {

// The step's assignment from everyone's selections (identical on every rank), then this rank's
// send plan (st.slot -> its row in the send order, psc.send_token) and receive plan (ps).
void plan_exchange(const model_spec& s, int E, int n, double factor, group& g, layer_state& st,
                   parallel_state& ps, parallel_scratch& psc) {
  const int K = s.moe.top_k, W = g.world(), me = g.rank(), EP = g.expert_parallel();
  const int El = E / EP, base = me - me % EP, mine_d = me % EP, N = W * n;
  const std::size_t nk = std::size_t(n) * K, Nk = nk * W;
  for (std::size_t c = 0; c < nk; ++c) psc.mine[c] = float(st.sel[c]);
  g.all_gather(psc.mine, psc.gsel, nk);
  for (std::size_t c = 0; c < Nk; ++c) psc.gsel_i[c] = int(psc.gsel[c]);
  const int cap = capacity(s.moe, N, E, factor);
  const int kept =
      k::moe_assign_slots(psc.gsel_i, N, E, K, cap, psc.gslot, psc.goffsets, psc.gtoken, st.counts);
  st.counted = N;
  st.dropped = N * K - kept;
  // Send: experts in order (owner d = e / El ascending), each expert's rows in priority order.
  std::fill(ps.send_rows, ps.send_rows + W, 0);
  std::fill(st.slot, st.slot + nk, -1);
  int p = 0;
  for (int e = 0; e < E; ++e)
    for (int r = psc.goffsets[e]; r < psc.goffsets[e + 1]; ++r) {
      const int gi = psc.gtoken[r];
      if (gi / n != me) continue;
      const int i = gi % n;
      int j = 0;
      while (psc.gslot[std::size_t(gi) * K + j] != r) ++j;
      st.slot[std::size_t(i) * K + j] = p;
      psc.send_token[p++] = i;
      ++ps.send_rows[base + e / El];
    }
  ps.send_total = p;
  st.rows = p;
  // Receive: from each source of the group, this rank's experts' rows (expert, then priority);
  // perm lists them expert-major (source, then priority, within an expert).
  std::fill(ps.recv_rows, ps.recv_rows + W, 0);
  int* cnt = psc.cnt;  // [EP, El] rows from source d for local expert e
  std::fill(cnt, cnt + std::size_t(EP) * El, 0);
  for (int el = 0; el < El; ++el) {
    const int e = mine_d * El + el;
    for (int r = psc.goffsets[e]; r < psc.goffsets[e + 1]; ++r) {
      const int src = psc.gtoken[r] / n;
      if (src / EP * EP != base) continue;
      ++cnt[(src - base) * El + el];
    }
  }
  // seg[d][el]: where source d's rows of expert el start in the received buffer; reuse cnt as
  // the running position.
  int at = 0;
  for (int d = 0; d < EP; ++d)
    for (int el = 0; el < El; ++el) {
      const int c = cnt[d * El + el];
      cnt[d * El + el] = at;
      at += c;
      ps.recv_rows[base + d] += c;
    }
  ps.recv_total = at;
  int q = 0;
  for (int el = 0; el < El; ++el) {
    const int e = mine_d * El + el;
    ps.loffsets[el] = q;
    for (int r = psc.goffsets[e]; r < psc.goffsets[e + 1]; ++r) {
      const int src = psc.gtoken[r] / n;
      if (src / EP * EP != base) continue;
      ps.perm[q++] = cnt[(src - base) * El + el]++;
    }
  }
  ps.loffsets[El] = q;
}

}  // namespace

void forward_parallel(const model_spec& s, const model_spec& es, const block::weights& w,
                      const float* ln2, int n, double factor, group& g, layer_state& st,
                      parallel_state& ps, const scratch& sc, parallel_scratch& psc, float* x) {
  const int C = s.hidden, E = w.moe.n_experts, K = s.moe.top_k, Ue = s.expert_up_dim();
  const int W = g.world(), EP = g.expert_parallel(), El = E / EP, first = (g.rank() % EP) * El;
  if (E % EP) fail("train.expert_parallel {} does not divide a layer's {} experts", EP, E);
  st.jitter_row0 = g.rank() * n;  // the token's row in the step's concatenated batch
  route(s, w, ln2, n, st, sc);
  st.parallel = true;
  plan_exchange(s, E, n, factor, g, st, ps, psc);
  // The step's figures: P_e, the z-loss and the entropy summed over the group.
  std::vector<double>& sums = psc.sums;  // reserved: no allocation per forward
  sums.assign(std::size_t(E) + 2, 0.0);
  for (int i = 0; i < n; ++i)
    for (int e = 0; e < E; ++e) sums[std::size_t(e)] += st.s[std::size_t(i) * E + e];
  sums[std::size_t(E)] = k::moe_z_loss(st.z, n, E, nullptr, 0.0f) * n;
  sums[std::size_t(E) + 1] = mean_entropy(st.s, n, E) * n;
  g.all_reduce(sums.data(), sums.size());
  const double N = double(n) * W;
  st.balance = 0;
  for (int e = 0; e < E; ++e) st.balance += st.counts[e] / (N * K) * (sums[std::size_t(e)] / N);
  st.balance *= E;
  st.z_loss = sums[std::size_t(E)] / N;
  st.entropy = sums[std::size_t(E) + 1] / N;
  // Tokens to their experts, the experts, and back.
  k::moe_gather(ln2, psc.send_token, ps.send_total, C, psc.sendbuf);
  to_floats(ps.send_rows, W, C, psc.send);
  to_floats(ps.recv_rows, W, C, psc.recv);
  g.all_to_all(psc.sendbuf, psc.send, psc.recvbuf, psc.recv);
  permute_in(psc.recvbuf, ps.perm, ps.recv_total, C, ps.xs);
  for (int el = 0; el < El; ++el) {
    const int r0 = ps.loffsets[el], m = ps.loffsets[el + 1] - r0;
    if (m == 0) continue;
    block::mlp_forward(es, expert(w, first + el), ps.xs + std::size_t(r0) * C,
                       ps.h + std::size_t(r0) * Ue, sc.a, nullptr,
                       psc.expert_out + std::size_t(r0) * C, m);
  }
  permute_out(psc.expert_out, ps.perm, ps.recv_total, C, psc.recvbuf);
  g.all_to_all(psc.recvbuf, psc.recv, st.out, psc.send);
  k::moe_combine(st.out, st.slot, st.gate, n, K, C, x);
}

void backward_parallel(const model_spec& s, const model_spec& es, const block::weights& w,
                       const block::grads& g, const float* ln2, const layer_state& st,
                       const parallel_state& ps, const scratch& sc, parallel_scratch& psc,
                       group& grp, const float* d, float aux_scale, float* dln2) {
  const int n = st.n, C = s.hidden, E = w.moe.n_experts, K = s.moe.top_k, Ue = s.expert_up_dim();
  const int W = grp.world(), EP = grp.expert_parallel(), El = E / EP,
            first = (grp.rank() % EP) * El;
  // dout rows in the send order, to the experts' ranks; their d(input) rows back.
  k::moe_combine_backward(st.out, st.slot, st.gate, d, n, K, C, psc.sendbuf, sc.dgate);
  to_floats(ps.send_rows, W, C, psc.send);
  to_floats(ps.recv_rows, W, C, psc.recv);
  grp.all_to_all(psc.sendbuf, psc.send, psc.recvbuf, psc.recv);
  permute_in(psc.recvbuf, ps.perm, ps.recv_total, C, psc.expert_out);
  for (int el = 0; el < El; ++el) {
    const int r0 = ps.loffsets[el], m = ps.loffsets[el + 1] - r0;
    if (m == 0) continue;
    float* dx = psc.expert_out + std::size_t(r0) * C;
    block::mlp_backward(es, expert(w.moe, first + el), expert(g.moe, first + el),
                        ps.xs + std::size_t(r0) * C, ps.h + std::size_t(r0) * Ue, sc.a, dx, sc.dh,
                        dx, m);
  }
  permute_out(psc.expert_out, ps.perm, ps.recv_total, C, psc.recvbuf);
  grp.all_to_all(psc.recvbuf, psc.recv, psc.sendbuf, psc.send);
  k::moe_scatter_add(psc.sendbuf, st.slot, n, K, C, dln2);
  router_backward(s, w, g, ln2, st, sc, aux_scale, dln2);
}

}  // namespace zf::moe
