// bench_gpu: the cuda twins on a GPU, timed with CUDA events through the public dispatch on
// device::cuda (scripts/gpu-check runs it beside bench/gpu_torch_peer.py, whose PyTorch calls
// take the same shapes in the same call, and prints the ratios). Per op: shape, median time over
// repeats, TFLOP/s for the matrix ops and GB/s (bytes an op must move at least once) for the
// memory-bound ones; `copy` is a device-to-device copy, the memory's speed to hold them against.
// Without a GPU (or a CUDA build) it prints why and a last line with skipped=1, exit 0.
// Last line: `gpu key=value ...`.
//   bench_gpu [--filter SUBSTR] [--repeats N]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/convert.hpp"
#include "kernels/device.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/paged_attention.hpp"
#include "kernels/softmax.hpp"

namespace k = zf::kernels;

namespace {

struct options {
  std::string filter;
  int repeats = 20;
} opt;

std::map<std::string, double> g_keys;  // the last line

// A GPU buffer of n T, freed at scope exit, filled from a host vector.
template <class T>
struct gbuf {
  T* p = nullptr;
  std::size_t n = 0;
  explicit gbuf(std::size_t count) : n(count) { p = static_cast<T*>(k::gpu_alloc(n * sizeof(T))); }
  gbuf(const gbuf&) = delete;
  ~gbuf() { k::gpu_free(p); }
  void upload(const std::vector<T>& h) { k::gpu_copy(p, h.data(), h.size() * sizeof(T)); }
};

std::vector<float> randn(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<std::uint16_t> randn_bf16(std::size_t n, unsigned seed) {
  const auto f = randn(n, seed);
  std::vector<std::uint16_t> b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = k::f32_to_bf16(f[i]);
  return b;
}

bool wanted(const std::string& name) {
  return opt.filter.empty() || name.find(opt.filter) != std::string::npos;
}

// Median ms of fn over opt.repeats runs (after two warm-ups), each timed by events on the
// current (default) stream.
double time_ms(const std::function<void()>& fn) {
  fn();
  fn();
  k::gpu_synchronize();
  std::vector<double> ms;
  k::gpu_event a, b;
  for (int r = 0; r < opt.repeats; ++r) {
    a.record_current();
    fn();
    b.record_current();
    b.synchronize();
    ms.push_back(b.ms_since(a));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void report(const std::string& key, const std::string& shape, double ms, double flops,
            double bytes) {
  std::printf("%-22s %-30s %10.3f ms", key.c_str(), shape.c_str(), ms);
  if (flops > 0) {
    std::printf(" %9.1f TFLOP/s", flops / ms / 1e9);
    g_keys[key + "_tflops"] = flops / ms / 1e9;
  }
  if (bytes > 0) {
    std::printf(" %9.1f GB/s", bytes / ms / 1e6);
    g_keys[key + "_gbs"] = bytes / ms / 1e6;
  }
  std::printf("\n");
  g_keys[key + "_ms"] = ms;
}

// Runs one op's timing; a kernel_error (a family with no twin yet) is reported, not fatal.
void guarded(const std::string& name, const std::function<void()>& body) {
  if (!wanted(name)) return;
  try {
    body();
  } catch (const k::kernel_error& e) {
    std::printf("%-22s not measured: %s\n", name.c_str(), e.what());
    g_keys[name + "_missing"] = 1;
  }
}

void bench_copy() {
  guarded("copy", [] {
    const std::size_t n = std::size_t{1} << 28;  // 1 GiB
    gbuf<float> a(n), b(n);
    const double ms = time_ms([&] { k::gpu_copy(b.p, a.p, n * sizeof(float)); });
    report("copy", "1 GiB d2d", ms, 0, 2.0 * n * sizeof(float));
  });
}

void bench_gemm() {
  guarded("gemm_bf16", [] {
    const int s = 8192;
    const std::size_t nn = std::size_t(s) * s;
    gbuf<std::uint16_t> a(nn), b(nn);
    gbuf<float> c(nn);
    a.upload(randn_bf16(nn, 1));
    b.upload(randn_bf16(nn, 2));
    const double ms =
        time_ms([&] { k::gemm_bf16(false, false, s, s, s, 1.0f, a.p, 0, b.p, 0, 0.0f, c.p, 0); });
    report("gemm_bf16", "8192^3 nn", ms, 2.0 * s * s * double(s), 0);
  });
  guarded("gemm_fp32", [] {
    const int s = 4096;
    const std::size_t nn = std::size_t(s) * s;
    gbuf<float> a(nn), b(nn), c(nn);
    a.upload(randn(nn, 3));
    b.upload(randn(nn, 4));
    const double ms =
        time_ms([&] { k::gemm(false, false, s, s, s, 1.0f, a.p, 0, b.p, 0, 0.0f, c.p, 0); });
    report("gemm_fp32", "4096^3 nn", ms, 2.0 * s * s * double(s), 0);
  });
  guarded("linear_fwd", [] {  // gpt2-124M fc: 8 x 1024 tokens, 768 -> 3072, bias
    const int n = 8192, ic = 768, oc = 3072;
    gbuf<float> x(std::size_t(n) * ic), w(std::size_t(ic) * oc), bias(oc), y(std::size_t(n) * oc);
    x.upload(randn(x.n, 5));
    w.upload(randn(w.n, 6, 0.02f));
    const double ms = time_ms([&] { k::linear_forward(x.p, w.p, bias.p, y.p, n, ic, oc); });
    report("linear_fwd", "8192x768 @ 768x3072", ms, 2.0 * n * ic * double(oc), 0);
  });
}

void bench_rows() {
  guarded("layernorm_fwd", [] {
    const int n = 8192, c = 768;
    gbuf<float> x(std::size_t(n) * c), g(c), b(c), y(x.n), mean(n), rstd(n);
    x.upload(randn(x.n, 7));
    g.upload(std::vector<float>(c, 1.0f));
    const double ms =
        time_ms([&] { k::layernorm_forward(x.p, g.p, b.p, y.p, mean.p, rstd.p, n, c); });
    report("layernorm_fwd", "8192x768", ms, 0, 2.0 * x.n * sizeof(float));
  });
  guarded("xent_fused", [] {
    const int n = 8192, v = 50257;
    const std::size_t nv = std::size_t(n) * v;
    gbuf<float> logits(nv), loss(n);
    gbuf<int> targets(n);
    std::vector<int> t(n);
    for (int i = 0; i < n; ++i) t[i] = (i * 7919) % v;
    targets.upload(t);
    const auto row = randn(std::size_t(v), 8);
    for (int r = 0; r < n; ++r) k::gpu_copy(logits.p + std::size_t(r) * v, row.data(), v * 4);
    const double ms =
        time_ms([&] { k::softmax_xent_fused(logits.p, targets.p, loss.p, n, v, 1.0f / n); });
    report("xent_fused", "8192x50257", ms, 0, 2.0 * nv * sizeof(float));
  });
  guarded("gelu_fwd", [] {
    const std::size_t n = std::size_t(8192) * 3072;
    gbuf<float> x(n), y(n);
    x.upload(randn(n, 9));
    const double ms = time_ms([&] { k::gelu_forward(x.p, y.p, n); });
    report("gelu_fwd", "8192x3072", ms, 0, 2.0 * n * sizeof(float));
  });
  guarded("adamw", [] {
    const std::size_t n = 124'000'000;
    gbuf<float> p(n), g(n), m(n), v(n);
    k::adamw_params a;
    const double ms = time_ms([&] { k::adamw_step(p.p, g.p, m.p, v.p, n, a); });
    report("adamw", "124M params", ms, 0, 7.0 * n * sizeof(float));  // p,m,v rw + g read
  });
}

void bench_attention() {
  guarded("attention_fwd", [] {  // one gpt2-124M sequence: 1024 positions, 12 heads of 64
    const int t = 1024, nh = 12, hd = 64, c = nh * hd;
    gbuf<float> qkv(std::size_t(t) * 3 * c), out(std::size_t(t) * c), att(std::size_t(nh) * t * t);
    qkv.upload(randn(qkv.n, 10));
    k::attention_shape s{t, t, 0, nh, hd, 3 * c, 3 * c, 3 * c, c};
    const double ms =
        time_ms([&] { k::attention_forward(s, qkv.p, qkv.p + c, qkv.p + 2 * c, out.p, att.p); });
    report("attention_fwd", "1024 pos, 12x64", ms, 2.0 * nh * double(t) * t * hd, 0);
  });
  guarded("paged_decode", [] {  // one decode row over 4096 cached positions, 32 heads of 128
    const int ctx = 4096, nh = 32, nkv = 8, hd = 128, bs = 16, blocks = ctx / bs;
    const std::size_t kv_dim = std::size_t(nkv) * hd;
    gbuf<std::uint16_t> kp(std::size_t(blocks) * bs * kv_dim), vp(kp.n);
    kp.upload(randn_bf16(kp.n, 11));
    vp.upload(randn_bf16(vp.n, 12));
    std::vector<int> table(blocks);
    for (int i = 0; i < blocks; ++i) table[i] = (i * 37) % blocks;
    gbuf<int> tb(blocks);
    tb.upload(table);
    gbuf<float> q(std::size_t(nh) * hd), out(q.n);
    q.upload(randn(q.n, 13));
    k::paged_shape s;
    s.tq = 1;
    s.start = ctx - 1;
    s.n_head = nh;
    s.n_kv_head = nkv;
    s.head_dim = hd;
    s.ldq = s.ldo = nh * hd;
    k::paged_kv kv;
    kv.k16 = kp.p;
    kv.v16 = vp.p;
    kv.blocks = tb.p;
    kv.block_size = bs;
    kv.kv_dim = static_cast<int>(kv_dim);
    gbuf<float> scratch(static_cast<std::size_t>(k::paged_attention_scratch(s)) + 1);
    const double ms = time_ms([&] { k::paged_attention(s, q.p, kv, out.p, scratch.p); });
    report("paged_decode", "ctx 4096, 32q/8kv x128 bf16", ms, 0, 2.0 * kp.n * 2);
  });
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--filter") {
      opt.filter = v;
    } else if (a == "--repeats") {
      opt.repeats = std::max(1, std::stoi(v));
    } else {
      std::fprintf(stderr, "usage: bench_gpu [--filter SUBSTR] [--repeats N]\n");
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "usage: bench_gpu [--filter SUBSTR] [--repeats N]\n");
    return 2;
  }
  if (!k::cuda_built() || k::cuda_device_count() == 0) {
    std::printf("bench_gpu: %s: nothing measured\n",
                k::cuda_built() ? "no CUDA device visible" : "built without CUDA");
    std::printf("gpu skipped=1\n");
    return 0;
  }
  k::gpu_init(0);
  k::device_scope on_gpu(k::device::cuda);
  std::printf("%-22s %-30s %13s %17s %12s\n", "op", "shape", "median", "compute", "memory");
  bench_copy();
  bench_gemm();
  bench_rows();
  bench_attention();
  const auto mem = k::gpu_memory();
  std::printf("pool: reserved high %.1f GiB, used high %.1f GiB\n",
              mem.reserved_high / 1073741824.0, mem.used_high / 1073741824.0);
  std::printf("gpu");
  for (const auto& [key, v] : g_keys) std::printf(" %s=%.4g", key.c_str(), v);
  std::printf("\n");
  return 0;
}
