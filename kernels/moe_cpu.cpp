// CPU reference of the MoE routing family (moe.hpp). Sums that decide numbers (softmax
// denominators, gate normalisation, dot products for gate gradients) run in double; nothing
// allocates.
#include <cmath>
#include <cstring>

#include "kernels/moe.hpp"

namespace zf::kernels::cpu {

namespace {

// log(sum_e exp(z[e])), max-subtracted, in double.
double row_lse(const float* z, int E) {
  float m = z[0];
  for (int e = 1; e < E; ++e) m = z[e] > m ? z[e] : m;
  double sum = 0;
  for (int e = 0; e < E; ++e) sum += std::exp(double(z[e]) - m);
  return m + std::log(sum);
}

}  // namespace

void router_scores(const float* z, float* s, int n, int E, bool sigmoid) {
  for (int i = 0; i < n; ++i) {
    const float* zr = z + std::size_t(i) * E;
    float* sr = s + std::size_t(i) * E;
    if (sigmoid) {
      for (int e = 0; e < E; ++e) sr[e] = float(1.0 / (1.0 + std::exp(-double(zr[e]))));
      continue;
    }
    const double lse = row_lse(zr, E);
    for (int e = 0; e < E; ++e) sr[e] = float(std::exp(double(zr[e]) - lse));
  }
}

void router_scores_backward(const float* s, const float* ds, float* dz, int n, int E,
                            bool sigmoid) {
  for (int i = 0; i < n; ++i) {
    const std::size_t o = std::size_t(i) * E;
    if (sigmoid) {
      for (int e = 0; e < E; ++e) dz[o + e] = ds[o + e] * s[o + e] * (1.0f - s[o + e]);
      continue;
    }
    double dot = 0;
    for (int e = 0; e < E; ++e) dot += double(ds[o + e]) * s[o + e];
    for (int e = 0; e < E; ++e) dz[o + e] = float(s[o + e] * (ds[o + e] - dot));
  }
}

void topk_gates(const float* s, const float* bias, int n, int E, int k, bool normalize, int* sel,
                float* gate) {
  for (int i = 0; i < n; ++i) {
    const float* sr = s + std::size_t(i) * E;
    int* si = sel + std::size_t(i) * k;
    // Insertion into a descending list of k; strict > keeps the lower expert first on ties.
    auto key = [&](int e) { return bias ? sr[e] + bias[e] : sr[e]; };
    int filled = 0;
    for (int e = 0; e < E; ++e) {
      const float v = key(e);
      if (filled == k && !(v > key(si[k - 1]))) continue;
      int p = filled < k ? filled++ : k - 1;
      for (; p > 0 && v > key(si[p - 1]); --p) si[p] = si[p - 1];
      si[p] = e;
    }
    float* g = gate + std::size_t(i) * k;
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += sr[si[j]];
    for (int j = 0; j < k; ++j) g[j] = normalize ? float(sr[si[j]] / sum) : sr[si[j]];
  }
}

void topk_gates_backward(const float* s, const int* sel, const float* dgate, int n, int E, int k,
                         bool normalize, float* ds) {
  for (int i = 0; i < n; ++i) {
    const float* sr = s + std::size_t(i) * E;
    const int* si = sel + std::size_t(i) * k;
    const float* dg = dgate + std::size_t(i) * k;
    float* dr = ds + std::size_t(i) * E;
    if (!normalize) {
      for (int j = 0; j < k; ++j) dr[si[j]] += dg[j];
      continue;
    }
    // g_j = s_j / S, S = sum_j s_j: dL/ds_j = (dg_j - sum_m dg_m g_m) / S.
    double S = 0, dot = 0;
    for (int j = 0; j < k; ++j) S += sr[si[j]];
    for (int j = 0; j < k; ++j) dot += double(dg[j]) * sr[si[j]] / S;
    for (int j = 0; j < k; ++j) dr[si[j]] += float((dg[j] - dot) / S);
  }
}

int moe_assign_slots(const int* sel, int n, int E, int k, int capacity, int* slot, int* offsets,
                     int* token, int* counts) {
  const std::size_t nk = std::size_t(n) * k;
  auto count = [&] {
    std::memset(counts, 0, sizeof(int) * std::size_t(E));
    for (std::size_t c = 0; c < nk; ++c) ++counts[sel[c]];
  };
  count();
  offsets[0] = 0;
  for (int e = 0; e < E; ++e) {
    const int kept = capacity < 0 || counts[e] < capacity ? counts[e] : capacity;
    offsets[e + 1] = offsets[e] + kept;
  }
  // counts serves as each expert's fill level while the choices are placed in priority order,
  // then is counted again.
  std::memset(counts, 0, sizeof(int) * std::size_t(E));
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < n; ++i) {
      const std::size_t c = std::size_t(i) * k + j;
      const int e = sel[c];
      if (offsets[e] + counts[e] >= offsets[e + 1]) {
        slot[c] = -1;
        continue;
      }
      slot[c] = offsets[e] + counts[e]++;
      token[slot[c]] = i;
    }
  count();
  return offsets[E];
}

void moe_gather(const float* x, const int* token, int m, int C, float* dst) {
  for (int r = 0; r < m; ++r)
    std::memcpy(dst + std::size_t(r) * C, x + std::size_t(token[r]) * C, sizeof(float) * C);
}

void moe_combine(const float* out, const int* slot, const float* gate, int n, int k, int C,
                 float* y) {
  for (int i = 0; i < n; ++i) {
    float* yr = y + std::size_t(i) * C;
    for (int j = 0; j < k; ++j) {
      const int r = slot[std::size_t(i) * k + j];
      if (r < 0) continue;
      const float g = gate[std::size_t(i) * k + j];
      const float* o = out + std::size_t(r) * C;
      for (int c = 0; c < C; ++c) yr[c] += g * o[c];
    }
  }
}

void moe_combine_backward(const float* out, const int* slot, const float* gate, const float* d,
                          int n, int k, int C, float* dout, float* dgate) {
  for (int i = 0; i < n; ++i) {
    const float* dr = d + std::size_t(i) * C;
    for (int j = 0; j < k; ++j) {
      const std::size_t c = std::size_t(i) * k + j;
      const int r = slot[c];
      if (r < 0) {
        dgate[c] = 0.0f;
        continue;
      }
      const float g = gate[c];
      const float* o = out + std::size_t(r) * C;
      float* dor = dout + std::size_t(r) * C;
      double dot = 0;
      for (int x = 0; x < C; ++x) {
        dot += double(dr[x]) * o[x];
        dor[x] = g * dr[x];
      }
      dgate[c] = float(dot);
    }
  }
}

void moe_scatter_add(const float* dxs, const int* slot, int n, int k, int C, float* dx) {
  for (int i = 0; i < n; ++i) {
    float* xr = dx + std::size_t(i) * C;
    for (int j = 0; j < k; ++j) {
      const int r = slot[std::size_t(i) * k + j];
      if (r < 0) continue;
      const float* s = dxs + std::size_t(r) * C;
      for (int c = 0; c < C; ++c) xr[c] += s[c];
    }
  }
}

double moe_balance_loss(const float* s, const int* counts, int n, int counted, int E, int k,
                        float* ds, float coef) {
  double loss = 0;
  for (int e = 0; e < E; ++e) {
    double P = 0;
    for (int i = 0; i < n; ++i) P += s[std::size_t(i) * E + e];
    const double f = double(counts[e]) / (double(counted) * k);
    loss += f * (P / n);
    if (!ds) continue;
    const float g = float(coef * E * f / n);
    for (int i = 0; i < n; ++i) ds[std::size_t(i) * E + e] += g;
  }
  return E * loss;
}

double moe_z_loss(const float* z, int n, int E, float* dz, float coef) {
  double loss = 0;
  for (int i = 0; i < n; ++i) {
    const float* zr = z + std::size_t(i) * E;
    const double lse = row_lse(zr, E);
    loss += lse * lse;
    if (!dz) continue;
    float* dr = dz + std::size_t(i) * E;
    for (int e = 0; e < E; ++e)
      dr[e] += float(coef * 2.0 * lse * std::exp(double(zr[e]) - lse) / n);
  }
  return loss / n;
}

}  // namespace zf::kernels::cpu
