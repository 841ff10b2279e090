#pragma once
// The double-precision reference of every kernel family, written once. The kernel harness
// (test_harness*.cpp), the per-family tests and the CUDA twin checks all compare against these.
// Inputs are the kernels' own float inputs (both sides see the same numbers); every intermediate
// and output is double. Plain loops in the textbook formulation of each operation: obviously
// right, not fast. Shapes and layouts follow the kernel headers; outputs are dense unless noted.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/attention.hpp"

namespace zf::test::ref {

using dvec = std::vector<double>;

// ---- matmul ----------------------------------------------------------------------------------

// c = alpha * op(a) @ op(b) + beta * c_in; op(a): [m, k], op(b): [k, n]; explicit strides, c_in
// and c share the layout [m, ldc] (padding is the caller's to fill). beta = 0 ignores c_in (BLAS:
// NaN garbage in c does not propagate).
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const float* a, int lda,
                 const float* b, int ldb, double beta, const float* c_in, double* c, int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0.0;
      for (int p = 0; p < k; ++p) {
        const double av = ta ? a[p * lda + i] : a[i * lda + p];
        const double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        s += av * bv;
      }
      c[i * ldc + j] = alpha * s + (beta != 0.0 ? beta * c_in[i * ldc + j] : 0.0);
    }
  }
}

// x: [n, ic], w: [ic, oc], b: [oc] or nullptr -> y: [n, oc].
inline void linear_forward(const float* x, const float* w, const float* b, int n, int ic, int oc,
                           double* y) {
  for (int r = 0; r < n; ++r) {
    for (int o = 0; o < oc; ++o) {
      double s = b != nullptr ? b[o] : 0.0;
      for (int i = 0; i < ic; ++i) s += static_cast<double>(x[r * ic + i]) * w[i * oc + o];
      y[r * oc + o] = s;
    }
  }
}

// dy: [n, oc] -> dx: [n, ic] = dy @ w^T, dw: [ic, oc] = x^T @ dy, db: [oc] = column sums of dy
// (fresh values, not accumulated).
inline void linear_backward(const float* x, const float* w, const float* dy, int n, int ic, int oc,
                            double* dx, double* dw, double* db) {
  std::fill(dw, dw + static_cast<std::size_t>(ic) * oc, 0.0);
  std::fill(db, db + oc, 0.0);
  for (int r = 0; r < n; ++r) {
    for (int i = 0; i < ic; ++i) {
      double s = 0.0;
      for (int o = 0; o < oc; ++o) s += static_cast<double>(dy[r * oc + o]) * w[i * oc + o];
      dx[r * ic + i] = s;
    }
    for (int o = 0; o < oc; ++o) {
      db[o] += dy[r * oc + o];
      for (int i = 0; i < ic; ++i)
        dw[i * oc + o] += static_cast<double>(x[r * ic + i]) * dy[r * oc + o];
    }
  }
}

// ---- norm ------------------------------------------------------------------------------------

// LayerNorm (biased variance, eps inside the sqrt). x: [n, c] -> y: [n, c]; mean, rstd: [n].
inline void layernorm(const float* x, const float* g, const float* b, int n, int c, double* y,
                      double* mean, double* rstd, double eps = 1e-5) {
  for (int r = 0; r < n; ++r) {
    double mu = 0.0, var = 0.0;
    for (int j = 0; j < c; ++j) mu += x[r * c + j];
    mu /= c;
    for (int j = 0; j < c; ++j) var += (x[r * c + j] - mu) * (x[r * c + j] - mu);
    var /= c;
    const double rs = 1.0 / std::sqrt(var + eps);
    for (int j = 0; j < c; ++j) y[r * c + j] = (x[r * c + j] - mu) * rs * g[j] + b[j];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

// LayerNorm backward in closed form (fresh values): xhat = (x - mean) rstd, gg = dy * gamma,
// dx = rstd (gg - mean(gg) - xhat mean(gg xhat)), dgamma = sum_rows dy xhat, dbeta = sum_rows dy.
inline void layernorm_backward(const float* x, const float* g, const float* dy, int n, int c,
                               double eps, double* dx, double* dg, double* db) {
  std::fill(dg, dg + c, 0.0);
  std::fill(db, db + c, 0.0);
  for (int r = 0; r < n; ++r) {
    double mu = 0.0, var = 0.0;
    for (int j = 0; j < c; ++j) mu += x[r * c + j];
    mu /= c;
    for (int j = 0; j < c; ++j) var += (x[r * c + j] - mu) * (x[r * c + j] - mu);
    const double rs = 1.0 / std::sqrt(var / c + eps);
    double mg = 0.0, mgx = 0.0;
    for (int j = 0; j < c; ++j) {
      const double xh = (x[r * c + j] - mu) * rs, gg = static_cast<double>(dy[r * c + j]) * g[j];
      mg += gg;
      mgx += gg * xh;
      dg[j] += dy[r * c + j] * xh;
      db[j] += dy[r * c + j];
    }
    mg /= c;
    mgx /= c;
    for (int j = 0; j < c; ++j) {
      const double xh = (x[r * c + j] - mu) * rs;
      dx[r * c + j] = rs * (static_cast<double>(dy[r * c + j]) * g[j] - mg - xh * mgx);
    }
  }
}

// RMSNorm and its closed-form backward (dx, dgamma fresh, not accumulated):
// r = 1/sqrt(mean(x^2) + eps), y = x r g, dx = r g dy - x r^3 mean(x g dy), dgamma = sum_rows dy x
// r.
inline void rmsnorm(const float* x, const float* g, const float* dy, int n, int c, double eps,
                    double* y, double* rstd, double* dx, double* dg) {
  for (int j = 0; j < c; ++j) dg[j] = 0.0;
  for (int r = 0; r < n; ++r) {
    const float* xr = x + r * c;
    double ss = 0.0, sxgd = 0.0;
    for (int j = 0; j < c; ++j) {
      ss += static_cast<double>(xr[j]) * xr[j];
      sxgd += static_cast<double>(xr[j]) * g[j] * dy[r * c + j];
    }
    const double rs = 1.0 / std::sqrt(ss / c + eps);
    rstd[r] = rs;
    for (int j = 0; j < c; ++j) {
      y[r * c + j] = xr[j] * rs * g[j];
      dx[r * c + j] = rs * g[j] * dy[r * c + j] - xr[j] * rs * rs * rs * sxgd / c;
      dg[j] += static_cast<double>(dy[r * c + j]) * xr[j] * rs;
    }
  }
}

// ---- activation ------------------------------------------------------------------------------

// torch's GELU(approximate="tanh") and its derivative.
inline double gelu(double x) {
  const double k = std::sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}
inline double gelu_grad(double x) {
  const double k = std::sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x);
  const double t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

// gu: [n, 2m] rows of [gate | up] -> y: [n, m] = silu(gate) * up.
inline void swiglu_forward(const float* gu, int n, int m, double* y) {
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) {
      const double g = gu[i * 2 * m + j], u = gu[i * 2 * m + m + j];
      y[i * m + j] = g / (1.0 + std::exp(-g)) * u;
    }
  }
}

// SwiGLU backward: d gate = dy * u * s (1 + g (1 - s)), d up = dy * g * s, s = sigmoid(g).
inline void swiglu_backward(const float* gu, const float* dy, double* dgu, int n, int m) {
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) {
      const double g = gu[i * 2 * m + j], u = gu[i * 2 * m + m + j], d = dy[i * m + j];
      const double s = 1.0 / (1.0 + std::exp(-g));
      dgu[i * 2 * m + j] = d * u * s * (1.0 + g * (1.0 - s));
      dgu[i * 2 * m + m + j] = d * g * s;
    }
  }
}

// ---- rope ------------------------------------------------------------------------------------

// x: [n, ld] -> y: [n, ld]: heads [0, n_head) of head_dim rotated "rotate_half"-style by the angle
// pos[r] * inv_freq[i] (sign = +1, forward) or its inverse (sign = -1, backward); the other
// columns copied.
inline void rope(const float* x, int ld, int n, const int* pos, int n_head, int head_dim,
                 const double* inv_freq, int sign, double* y) {
  const int half = head_dim / 2;
  for (int i = 0; i < n * ld; ++i) y[i] = x[i];
  for (int r = 0; r < n; ++r) {
    for (int h = 0; h < n_head; ++h) {
      const float* a = x + r * ld + h * head_dim;
      double* o = y + r * ld + h * head_dim;
      for (int i = 0; i < half; ++i) {
        const double t = pos[r] * inv_freq[i], c = std::cos(t), s = sign * std::sin(t);
        o[i] = a[i] * c - a[i + half] * s;
        o[i + half] = a[i + half] * c + a[i] * s;
      }
    }
  }
}

// ---- attention -------------------------------------------------------------------------------

// Causal grouped-query attention, the spec of attention_forward: q: [tq, ldq] (n_head heads),
// k: [tk, ldk], v: [tk, ldv] (n_kv_head heads; 0 means n_head; query head h reads kv head
// h / (n_head / n_kv_head)) -> out: [tq, n_head * hd] dense, att: [n_head, tq, tk] (masked 0).
// Query i sits at absolute position offset + i and sees keys 0 .. offset + i.
inline void attention_forward(const kernels::attention_shape& s, const float* q, const float* k,
                              const float* v, dvec& out, dvec& att) {
  const int hd = s.head_dim, C = s.n_head * hd;
  const int group = s.n_kv_head > 0 ? s.n_head / s.n_kv_head : 1;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  out.assign(static_cast<std::size_t>(s.tq) * C, 0.0);
  att.assign(static_cast<std::size_t>(s.n_head) * s.tq * s.tk, 0.0);
  for (int h = 0; h < s.n_head; ++h) {
    const int kc = (h / group) * hd;
    for (int i = 0; i < s.tq; ++i) {
      const int L = s.offset + i + 1;
      double* a = &att[(static_cast<std::size_t>(h) * s.tq + i) * s.tk];
      double mx = -INFINITY;
      for (int j = 0; j < L; ++j) {
        double d = 0.0;
        for (int e = 0; e < hd; ++e) {
          d += static_cast<double>(q[i * s.ldq + h * hd + e]) * k[j * s.ldk + kc + e];
        }
        a[j] = d * scale;
        mx = std::max(mx, a[j]);
      }
      double sum = 0.0;
      for (int j = 0; j < L; ++j) sum += (a[j] = std::exp(a[j] - mx));
      for (int j = 0; j < L; ++j) a[j] /= sum;
      for (int e = 0; e < hd; ++e) {
        double o = 0.0;
        for (int j = 0; j < L; ++j) o += a[j] * v[j * s.ldv + kc + e];
        out[i * C + h * hd + e] = o;
      }
    }
  }
}

// Backward of attention_forward: dout: [tq, ldo] -> dq: [tq, n_head * hd], dk, dv:
// [tk, n_kv_head * hd] (dense, fresh; a kv head's gradient sums over its query heads).
inline void attention_backward(const kernels::attention_shape& s, const float* q, const float* k,
                               const float* v, const float* dout, dvec& dq, dvec& dk, dvec& dv) {
  dvec out, att;
  attention_forward(s, q, k, v, out, att);
  const int hd = s.head_dim, C = s.n_head * hd;
  const int n_kv = s.n_kv_head > 0 ? s.n_kv_head : s.n_head, KV = n_kv * hd;
  const int group = s.n_head / n_kv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  dq.assign(static_cast<std::size_t>(s.tq) * C, 0.0);
  dk.assign(static_cast<std::size_t>(s.tk) * KV, 0.0);
  dv.assign(static_cast<std::size_t>(s.tk) * KV, 0.0);
  dvec da(s.tk);
  for (int h = 0; h < s.n_head; ++h) {
    const int kc = (h / group) * hd;
    for (int i = 0; i < s.tq; ++i) {
      const int L = s.offset + i + 1;
      const double* a = &att[(static_cast<std::size_t>(h) * s.tq + i) * s.tk];
      double dot = 0.0;
      for (int j = 0; j < L; ++j) {
        double d = 0.0;
        for (int e = 0; e < hd; ++e) {
          const double g = dout[i * s.ldo + h * hd + e];
          d += g * v[j * s.ldv + kc + e];
          dv[j * KV + kc + e] += a[j] * g;
        }
        da[j] = d;
        dot += a[j] * d;
      }
      for (int j = 0; j < L; ++j) {
        const double dp = a[j] * (da[j] - dot) * scale;
        for (int e = 0; e < hd; ++e) {
          dq[i * C + h * hd + e] += dp * k[j * s.ldk + kc + e];
          dk[j * KV + kc + e] += dp * q[i * s.ldq + h * hd + e];
        }
      }
    }
  }
}

// ---- softmax / cross-entropy -----------------------------------------------------------------

// x: [v] -> loss = logsumexp(x) - x[t]; p (optional) receives softmax(x).
inline double xent(const float* x, int v, int t, dvec* p) {
  double mx = -INFINITY;
  for (int j = 0; j < v; ++j) mx = std::max(mx, static_cast<double>(x[j]));
  double s = 0.0;
  for (int j = 0; j < v; ++j) s += std::exp(x[j] - mx);
  if (p != nullptr) {
    p->resize(v);
    for (int j = 0; j < v; ++j) (*p)[j] = std::exp(x[j] - mx) / s;
  }
  return mx + std::log(s) - x[t];
}

// x: [n, v] -> y: [n, v], y[r] = softmax(x[r] * scale) (the max taken after scaling).
inline void softmax_rows(const float* x, int n, int v, double scale, double* y) {
  for (int r = 0; r < n; ++r) {
    double mx = -INFINITY, s = 0.0;
    for (int j = 0; j < v; ++j) mx = std::max(mx, scale * x[r * v + j]);
    for (int j = 0; j < v; ++j) s += std::exp(scale * x[r * v + j] - mx);
    for (int j = 0; j < v; ++j) y[r * v + j] = std::exp(scale * x[r * v + j] - mx) / s;
  }
}

// ---- embedding -------------------------------------------------------------------------------

// ids: [b, t]; wte: [vocab, c]; wpe: [max_pos, c] or nullptr -> out: [b, t, c].
inline void embedding_forward(const int* ids, const float* wte, const float* wpe, int b, int t,
                              int c, int pos0, double* out) {
  for (int r = 0; r < b * t; ++r) {
    for (int j = 0; j < c; ++j) {
      const double pe = wpe != nullptr ? wpe[(pos0 + r % t) * c + j] : 0.0;
      out[r * c + j] = static_cast<double>(wte[ids[r] * c + j]) + pe;
    }
  }
}

// dout: [b, t, c] ADDED into dwte: [vocab, c] and dwpe: [max_pos, c] (skipped when nullptr).
inline void embedding_backward(const int* ids, const float* dout, int b, int t, int c, int pos0,
                               double* dwte, double* dwpe) {
  for (int r = 0; r < b * t; ++r) {
    for (int j = 0; j < c; ++j) {
      dwte[ids[r] * c + j] += dout[r * c + j];
      if (dwpe != nullptr) dwpe[(pos0 + r % t) * c + j] += dout[r * c + j];
    }
  }
}

// ---- adamw -----------------------------------------------------------------------------------

// One AdamW step (torch.optim.AdamW semantics) on double state p, m, v: [n] with g' = g * gs:
// m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; p = p (1 - lr wd);
// p -= lr (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps).
inline void adamw_step(double* p, double* m, double* v, const float* g, std::size_t n, double lr,
                       double b1, double b2, double eps, double wd, int t, double gs) {
  const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
  for (std::size_t i = 0; i < n; ++i) {
    const double gi = g[i] * gs;
    m[i] = b1 * m[i] + (1.0 - b1) * gi;
    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
    p[i] = p[i] * (1.0 - lr * wd) - lr * (m[i] / bc1) / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
  }
}

inline double sum_squares(const float* x, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace zf::test::ref
