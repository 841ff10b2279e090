// bench_kernels: the kernel benchmark, the --perf side of the kernel harness. Every op of every
// family runs on the `bench` rows of the harness's shape table (tests/kernels/shapes.hpp) through
// the public dispatch, and prints per op: shape, median time, GFLOP/s and GB/s. Flops are the
// useful ones (causal attention counts the visible scores only; element-wise ops a nominal count
// per element, noted below); bytes are what the op must move at least once (inputs read, outputs
// written, accumulated outputs read and written).
// Peers measured in the same run give the ratios (the bench convention):
//   gemm_vs_cblas       cblas_sgemm called directly on the largest shape, over ours (~1: the
//                       dispatch costs nothing); gemm_small_vs_cblas the same at 16x16x16;
//   gemm_vs_blocked     a cache-blocked, vectorisable triple loop at 512^3, over ours;
//   adamw_vs_triad      AdamW's GB/s as a fraction of an in-place STREAM-style triad's
//                       (a[i] = a[i] + 3 c[i] over the same element count, DRAM-sized);
//   q*_vs_read          a quantized decode GEMV's weight GB/s (one token row, one thread,
//                       the LM head's shape) as a fraction of a vectorised read of as many bytes
//                       (the memory's limit for streaming them); fp32 GEMV the same way.
//   w8a8_prefill_vs_fp32_k*  fp32 GEMM's time over the W8A8 prefill GEMM's (256 rows, one
//                       thread, activation quantization included; above 1: W8A8 faster).
//   ggml_<fmt>_gbs      the ggml-format decode GEMV (kernels/ggml_quant.hpp, one token row) over
//                       a whole gpt2-124M step's weights (12 layers' distinct qkv, proj, fc,
//                       fc-proj matrices and the head), weight bytes over time, all cores (_t1: one
//                       thread); ggml_copy_gbs (_t1) a memcpy of a buffer past the L3 (read + write
//                       bytes), the memory's speed to hold them against.
// Each ratio times the two sides alternately, so a busy machine slows both alike.
// Last line: `kernels key=value ...`.
//   bench_kernels [--threads N] [--min-ms MS] [--filter SUBSTR]
#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench/kernels_util.hpp"
#include "kernels/activation.hpp"
#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/embedding.hpp"
#include "kernels/ggml_quant.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/parallel.hpp"
#include "kernels/quant.hpp"
#include "kernels/rope.hpp"
#include "kernels/softmax.hpp"
#include "kernels/threads.hpp"
#include "tests/kernels/shapes.hpp"

using namespace zf::bench_kernels;

namespace {

// c[m, n] = a[m, k] @ b[k, n]: blocked i-k-j loops whose inner j loop the compiler vectorises.
void blocked_gemm(int m, int n, int k, const float* a, const float* b, float* c) {
  constexpr int bi = 64, bk = 256;
  std::fill(c, c + static_cast<std::size_t>(m) * n, 0.0f);
  for (int i0 = 0; i0 < m; i0 += bi) {
    for (int p0 = 0; p0 < k; p0 += bk) {
      for (int i = i0; i < std::min(m, i0 + bi); ++i) {
        float* ci = c + static_cast<std::size_t>(i) * n;
        for (int p = p0; p < std::min(k, p0 + bk); ++p) {
          const float av = a[static_cast<std::size_t>(i) * k + p];
          const float* bp = b + static_cast<std::size_t>(p) * n;
          for (int j = 0; j < n; ++j) ci[j] += av * bp[j];
        }
      }
    }
  }
}

void bench_gemm() {
  if (!wanted("gemm")) return;
  double best_flops = 0.0;
  for (const auto& s : sh::gemm_cases) {
    if (!(s.use & sh::bench)) continue;
    const bool ta = s.ops[0] == 't', tb = s.ops[1] == 't';
    const auto a = fill(static_cast<std::size_t>(s.m) * s.k),
               b = fill(static_cast<std::size_t>(s.k) * s.n, 2);
    std::vector<float> c(static_cast<std::size_t>(s.m) * s.n);
    const std::string shape = std::string(s.ops) + " " + dims({s.m, s.n, s.k});
    const double flops = 2.0 * s.m * s.n * s.k, bytes = 4.0 * (a.size() + b.size() + c.size());
    const int lda = ta ? s.m : s.k, ldb = tb ? s.k : s.n;
    const auto [ours, peer] = time_pair(
        [&] { k::gemm(ta, tb, s.m, s.n, s.k, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0); },
        [&] {
          cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      s.m, s.n, s.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), s.n);
        });
    const auto [gf, gb] = report("gemm", shape, ours, flops, bytes);
    report("gemm (cblas direct)", shape, peer, flops, bytes);
    if (flops > best_flops) {
      best_flops = flops;
      summary["gemm_gflops"] = gf;
      summary["gemm_vs_cblas"] = peer / ours;
    }
    if (s.m == 512 && s.n == 512 && s.k == 512 && !ta && !tb) {
      const auto [ours2, base] = time_pair(
          [&] {
            k::gemm(false, false, 512, 512, 512, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0);
          },
          [&] { blocked_gemm(512, 512, 512, a.data(), b.data(), c.data()); });
      report("gemm (blocked loop)", shape, base, flops, bytes);
      summary["gemm_vs_blocked"] = base / ours2;
    }
  }
  // Dispatch overhead where it would show: a tiny GEMM, many calls.
  const auto a = fill(256), b = fill(256, 2);
  std::vector<float> c(256);
  const auto [ours, peer] = time_pair(
      [&] {
        for (int r = 0; r < 1000; ++r)
          k::gemm(false, false, 16, 16, 16, 1.0f, a.data(), 0, b.data(), 0, 0.0f, c.data(), 0);
      },
      [&] {
        for (int r = 0; r < 1000; ++r)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 16, 16, 16, 1.0f, a.data(), 16,
                      b.data(), 16, 0.0f, c.data(), 16);
      });
  report("gemm x1000", "nn 16x16x16", ours, 1000 * 2.0 * 4096, 1000 * 4.0 * 768);
  report("gemm x1000 (cblas)", "nn 16x16x16", peer, 1000 * 2.0 * 4096, 1000 * 4.0 * 768);
  summary["gemm_small_vs_cblas"] = peer / ours;
}

void bench_linear() {
  if (!wanted("linear")) return;
  for (const auto& s : sh::linear_cases) {
    if (!(s.use & sh::bench)) continue;
    const double n = s.n, ic = s.ic, oc = s.oc;
    const auto x = fill(static_cast<std::size_t>(s.n) * s.ic),
               w = fill(static_cast<std::size_t>(s.ic) * s.oc, 2);
    const auto b = fill(s.oc, 3), dy = fill(static_cast<std::size_t>(s.n) * s.oc, 4);
    std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(s.oc);
    const std::string shape = dims({s.n, s.ic, s.oc});
    double ms = time_ms(
        [&] { k::linear_forward(x.data(), w.data(), b.data(), y.data(), s.n, s.ic, s.oc); });
    report("linear_forward", shape, ms, 2 * n * ic * oc + n * oc,
           4 * (n * ic + ic * oc + oc + n * oc));
    ms = time_ms([&] {
      k::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), s.n, s.ic,
                         s.oc);
    });
    report("linear_backward", shape, ms, 4 * n * ic * oc + n * oc,
           4 * (2 * n * ic + 3 * ic * oc + n * oc + 2 * oc));
  }
}

void bench_norm() {
  if (!wanted("norm")) return;
  for (const auto& s : sh::norm_cases) {
    if (!(s.use & sh::bench)) continue;
    const double nc = static_cast<double>(s.n) * s.c, n = s.n, c = s.c;
    const auto x = fill(static_cast<std::size_t>(nc)), g = fill(s.c, 2), b = fill(s.c, 3);
    const auto dy = fill(static_cast<std::size_t>(nc), 4);
    std::vector<float> y(x.size()), dx(x.size()), mean(s.n), rstd(s.n), dg(s.c), dbt(s.c);
    const std::string shape = dims({s.n, s.c});
    double ms = time_ms([&] {
      k::layernorm_forward(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), s.n,
                           s.c);
    });
    auto [gf, gb] = report("layernorm_forward", shape, ms, 8 * nc, 4 * (2 * nc + 2 * c + 2 * n));
    if (s.c == 4096) summary["layernorm_gbs"] = gb;
    ms = time_ms([&] {
      k::layernorm_backward(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                            dg.data(), dbt.data(), s.n, s.c);
    });
    report("layernorm_backward", shape, ms, 12 * nc, 4 * (4 * nc + 5 * c + 2 * n));
    ms = time_ms(
        [&] { k::rmsnorm_forward(x.data(), g.data(), y.data(), rstd.data(), s.n, s.c, 1e-5f); });
    std::tie(gf, gb) = report("rmsnorm_forward", shape, ms, 4 * nc, 4 * (2 * nc + c + n));
    if (s.c == 4096) summary["rmsnorm_gbs"] = gb;
    ms = time_ms([&] {
      k::rmsnorm_backward(x.data(), g.data(), rstd.data(), dy.data(), dx.data(), dg.data(), s.n,
                          s.c);
    });
    report("rmsnorm_backward", shape, ms, 8 * nc, 4 * (4 * nc + 3 * c + n));
  }
}

// Nominal flops per element: gelu 12 (+1 exp), its gradient 20, silu*up 5, its gradient 12.
void bench_activation() {
  if (!wanted("gelu") && !wanted("swiglu") && !wanted("accumulate")) return;
  for (const auto& s : sh::elem_cases) {
    if (!(s.use & sh::bench)) continue;
    const std::size_t n = static_cast<std::size_t>(s.n);
    const auto x = fill(n), dy = fill(n, 2);
    std::vector<float> y(n), dx(n);
    const std::string shape = std::to_string(n);
    const double dn = static_cast<double>(n);
    double ms = time_ms([&] { k::gelu_forward(x.data(), y.data(), n); });
    report("gelu_forward", shape, ms, 12 * dn, 8 * dn);
    ms = time_ms([&] { k::gelu_backward(x.data(), dy.data(), dx.data(), n); });
    auto [gf, gb] = report("gelu_backward", shape, ms, 20 * dn, 12 * dn);
    summary["gelu_backward_gbs"] = gb;
    ms = time_ms([&] { k::accumulate(y.data(), x.data(), n); });
    report("accumulate", shape, ms, dn, 12 * dn);
  }
  for (const auto& s : sh::swiglu_cases) {
    if (!(s.use & sh::bench)) continue;
    const double nm = static_cast<double>(s.n) * s.c;
    const auto gu = fill(static_cast<std::size_t>(2 * nm)),
               dy = fill(static_cast<std::size_t>(nm), 2);
    std::vector<float> y(dy.size()), dgu(gu.size());
    const std::string shape = dims({s.n, s.c});
    double ms = time_ms([&] { k::swiglu_forward(gu.data(), y.data(), s.n, s.c); });
    report("swiglu_forward", shape, ms, 5 * nm, 12 * nm);
    ms = time_ms([&] { k::swiglu_backward(gu.data(), dy.data(), dgu.data(), s.n, s.c); });
    report("swiglu_backward", shape, ms, 12 * nm, 20 * nm);
  }
}

void bench_rope() {
  if (!wanted("rope")) return;
  for (const auto& s : sh::rope_cases) {
    if (!(s.use & sh::bench)) continue;
    const int ld = s.n_head * s.head_dim + s.pad, half = s.head_dim / 2, n_pos = 4096;
    std::vector<double> inv_freq(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(500000.0, -2.0 * i / s.head_dim);
    std::vector<float> cs(static_cast<std::size_t>(n_pos) * half), sn(cs.size());
    k::rope_tables(n_pos, s.head_dim, inv_freq.data(), cs.data(), sn.data());
    auto x = fill(static_cast<std::size_t>(s.n) * ld);
    const auto pos = ids(s.n, n_pos);
    const double e = static_cast<double>(s.n) * s.n_head * s.head_dim;
    const double bytes = 4 * (2 * e + static_cast<double>(s.n) * s.head_dim);
    const std::string shape = dims({s.n, s.n_head, s.head_dim});
    double ms = time_ms([&] {
      k::rope_forward(x.data(), ld, s.n, pos.data(), s.n_head, s.head_dim, cs.data(), sn.data());
    });
    report("rope_forward", shape, ms, 3 * e, bytes);
    ms = time_ms([&] {
      k::rope_backward(x.data(), ld, s.n, pos.data(), s.n_head, s.head_dim, cs.data(), sn.data());
    });
    report("rope_backward", shape, ms, 3 * e, bytes);
  }
}

void bench_attention() {
  if (!wanted("attention")) return;
  for (const auto& s : sh::attention_cases) {
    if (!(s.use & sh::bench)) continue;
    const int nh = s.n_head, hd = s.head_dim, C = nh * hd, tq = s.tq, tk = s.offset + s.tq;
    const k::attention_shape a{tq, tk, s.offset, nh, hd, C, C, C, C, s.n_kv_head};
    const auto q = fill(static_cast<std::size_t>(tq) * C),
               kk = fill(static_cast<std::size_t>(tk) * C, 2);
    const auto v = fill(kk.size(), 3), dout = fill(q.size(), 4);
    std::vector<float> out(q.size()), att(static_cast<std::size_t>(nh) * tq * tk), datt(att.size());
    std::vector<float> dq(q.size()), dk(kk.size()), dv(v.size());
    // Visible (query, key) pairs of one head.
    const double vis = static_cast<double>(tq) * s.offset + 0.5 * tq * (tq + 1.0);
    const double qo = 4.0 * tq * C, kv = 4.0 * tk * C, a_bytes = 4.0 * nh * tq * tk;
    const std::string shape = "tq " + std::to_string(tq) + " off " + std::to_string(s.offset) +
                              " h " + std::to_string(nh) + " d " + std::to_string(hd);
    double ms = time_ms(
        [&] { k::attention_forward(a, q.data(), kk.data(), v.data(), out.data(), att.data()); });
    auto [gf, gb] = report("attention_forward", shape, ms, nh * vis * (4.0 * hd + 5),
                           2 * qo + 2 * kv + a_bytes);
    if (tq == 1024) summary["attention_fwd_gflops"] = gf;
    ms = time_ms([&] {
      k::attention_backward(a, q.data(), kk.data(), v.data(), att.data(), dout.data(), datt.data(),
                            dq.data(), dk.data(), dv.data());
    });
    std::tie(gf, gb) = report("attention_backward", shape, ms, nh * vis * (8.0 * hd + 4),
                              3 * qo + 4 * kv + 3 * a_bytes);
    if (tq == 1024) summary["attention_bwd_gflops"] = gf;
  }
}

void bench_paged() {
  if (!wanted("paged")) return;
  for (const auto& s : sh::paged_cases) {
    if (!(s.use & sh::bench)) continue;
    const int ctx = s.start + s.tq, Q = s.n_head * s.head_dim, KV = s.n_kv_head * s.head_dim;
    const int nblocks = (ctx + s.block_size - 1) / s.block_size;
    std::vector<int> table(nblocks);
    for (int i = 0; i < nblocks; ++i) table[i] = nblocks - 1 - i;  // blocks in reverse order
    const auto kp = fill(static_cast<std::size_t>(nblocks) * s.block_size * KV);
    const auto vp = fill(kp.size(), 2), q = fill(static_cast<std::size_t>(s.tq) * Q, 3);
    const k::paged_shape ps{.tq = s.tq,
                            .start = s.start,
                            .n_head = s.n_head,
                            .n_kv_head = s.n_kv_head,
                            .head_dim = s.head_dim,
                            .ldq = Q,
                            .ldo = Q};
    const k::paged_kv kv{.k = kp.data(),
                         .v = vp.data(),
                         .blocks = table.data(),
                         .block_size = s.block_size,
                         .kv_dim = KV};
    std::vector<float> scratch(static_cast<std::size_t>(k::paged_attention_scratch(ps)));
    std::vector<float> out(q.size());
    const double vis = static_cast<double>(s.tq) * s.start + 0.5 * s.tq * (s.tq + 1.0);
    const std::string shape = "tq " + std::to_string(s.tq) + " ctx " + std::to_string(ctx) + " h " +
                              std::to_string(s.n_head) + "/" + std::to_string(s.n_kv_head) + " d " +
                              std::to_string(s.head_dim);
    const double ms =
        time_ms([&] { k::paged_attention(ps, q.data(), kv, out.data(), scratch.data()); });
    const auto [gf, gb] =
        report("paged_attention", shape, ms, s.n_head * vis * (4.0 * s.head_dim + 5),
               4.0 * (2.0 * ctx * KV + 2.0 * s.tq * Q));
    if (s.tq == 1) summary["paged_decode_gbs"] = gb;
  }
}

void bench_softmax() {
  if (!wanted("softmax")) return;
  for (const auto& s : sh::xent_cases) {
    if (!(s.use & sh::bench)) continue;
    const double nv = static_cast<double>(s.n) * s.c;
    auto logits = fill(static_cast<std::size_t>(nv));
    const auto targets = ids(s.n, s.c);
    std::vector<float> loss(s.n);
    const std::string shape = dims({s.n, s.c});
    double ms = time_ms(
        [&] { k::softmax_xent_forward(logits.data(), targets.data(), loss.data(), s.n, s.c); });
    report("softmax_xent_forward", shape, ms, 4 * nv, 4 * nv);
    ms = time_ms(
        [&] { k::softmax_xent_fused(logits.data(), targets.data(), loss.data(), s.n, s.c, 1.0f); });
    const auto [gf, gb] = report("softmax_xent_fused", shape, ms, 6 * nv, 8 * nv);
    summary["softmax_xent_gbs"] = gb;
    ms = time_ms([&] { k::softmax_rows(logits.data(), s.n, s.c, 1.0f); });
    report("softmax_rows", shape, ms, 5 * nv, 8 * nv);
  }
}

void bench_embedding() {
  if (!wanted("embedding")) return;
  for (const auto& s : sh::embedding_cases) {
    if (!(s.use & sh::bench)) continue;
    const double btc = static_cast<double>(s.b) * s.t * s.c, tc = static_cast<double>(s.t) * s.c;
    const auto tok = ids(static_cast<std::size_t>(s.b) * s.t, s.vocab);
    const auto wte = fill(static_cast<std::size_t>(s.vocab) * s.c),
               wpe = fill(static_cast<std::size_t>(s.max_pos) * s.c, 2);
    const auto dout = fill(static_cast<std::size_t>(btc), 3);
    std::vector<float> out(dout.size()), dwte(wte.size()), dwpe(wpe.size());
    const std::string shape = dims({s.b, s.t, s.c}) + " V " + std::to_string(s.vocab);
    double ms = time_ms([&] {
      k::embedding_forward(tok.data(), wte.data(), wpe.data(), out.data(), s.b, s.t, s.c, s.pos0);
    });
    report("embedding_forward", shape, ms, btc, 4 * (2 * btc + tc));
    ms = time_ms([&] {
      k::embedding_backward(tok.data(), dout.data(), dwte.data(), dwpe.data(), s.b, s.t, s.c,
                            s.pos0);
    });
    report("embedding_backward", shape, ms, 2 * btc, 4 * (3 * btc + 2 * tc));
  }
}

void bench_adamw_and_triad() {
  if (!wanted("adamw") && !wanted("triad")) return;
  for (const auto& s : sh::elem_cases) {
    if (!(s.use & sh::bench)) continue;
    const std::size_t n = static_cast<std::size_t>(s.n);
    const double dn = static_cast<double>(n);
    auto p = fill(n), m = fill(n, 2), v = fill(n, 3);
    for (auto& x : v) x = std::abs(x);
    const auto g = fill(n, 4);
    std::vector<float> dst(n);
    const std::string shape = std::to_string(n);
    k::adamw_params a;
    a.lr = 1e-3f;
    a.weight_decay = 0.1f;
    const auto [ms, triad_ms] =
        time_pair([&] { k::adamw_step(p.data(), g.data(), m.data(), v.data(), n, a); },
                  [&] {
                    float* __restrict d = dst.data();  // in place, as adamw: no write-allocate
                    const float* __restrict c = g.data();
                    for (std::size_t i = 0; i < n; ++i) d[i] = d[i] + 3.0f * c[i];
                  });
    const double triad_gb = report("stream triad (peer)", shape, triad_ms, 2 * dn, 12 * dn).second;
    const double gb = report("adamw_step", shape, ms, 15 * dn, 28 * dn).second;
    summary["triad_gbs"] = triad_gb;
    summary["adamw_gbs"] = gb;
    summary["adamw_vs_triad"] = gb / triad_gb;
    volatile double sink = 0;
    const double sq_ms = time_ms([&] { sink = sink + k::sum_squares(g.data(), n); });
    report("sum_squares", shape, sq_ms, 2 * dn, 4 * dn);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--threads") {
      opt.threads = std::stoi(v);
    } else if (a == "--min-ms") {
      opt.min_ms = std::stod(v);
    } else if (a == "--filter") {
      opt.filter = v;
    } else {
      std::fprintf(stderr, "usage: bench_kernels [--threads N] [--min-ms MS] [--filter SUBSTR]\n");
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "usage: bench_kernels [--threads N] [--min-ms MS] [--filter SUBSTR]\n");
    return 2;
  }
  k::set_num_threads(opt.threads);
  std::printf("%-20s %-34s %13s %17s %13s\n", "op", "shape", "median time", "compute", "memory");
  bench_gemm();
  bench_linear();
  bench_norm();
  bench_activation();
  bench_rope();
  bench_attention();
  bench_paged();
  bench_softmax();
  bench_embedding();
  bench_adamw_and_triad();
  bench_quant();
  bench_w8a8_prefill();
  bench_ggml();
  std::printf("kernels threads=%d", opt.threads);
  for (const auto& [key, value] : summary) std::printf(" %s=%.3g", key.c_str(), value);
  std::printf("\n");
  return 0;
}
