// bench_kernels' quantized sections (kernels/quant.hpp): the decode GEMV of the LM head in every
// quant format against a plain read, and the W8A8 prefill GEMM against fp32's.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bench/kernels_util.hpp"
#include "kernels/matmul.hpp"
#include "kernels/quant.hpp"

namespace zf::bench_kernels {

// Decode GEMV (one token row) of the LM head's shape in every quant format and fp32, each timed
// alternately with a plain read of as many bytes: GB/s of weights streamed, and its fraction of
// the read's.
void bench_quant() {
  if (!wanted("qgemv")) return;
  const int K = 768, N = 50257 / 32 * 32;  // the gpt2 head, N cut to whole 32-row pieces
  const auto w = fill(std::size_t(K) * N, 5), x = fill(K, 6);
  std::vector<float> y(N);
  volatile float sink = 0;
  auto read_peer = [&](const void* p, std::size_t bytes) {
    // the peer: sum every 32-bit word of the buffer (vectorised; reads each byte once)
    const auto* u = static_cast<const std::uint32_t*>(p);
    std::uint32_t acc = 0;
    for (std::size_t i = 0; i < bytes / 4; ++i) acc += u[i];
    sink = sink + float(acc);
  };
  {  // fp32: the model's [in, out] matrix through the gemm dispatch
    const auto [ms, peer] = time_pair(
        [&] { k::gemm(false, false, 1, N, K, 1.0f, x.data(), K, w.data(), N, 0.0f, y.data(), N); },
        [&] { read_peer(w.data(), w.size() * 4); });
    const double bytes = 4.0 * K * N;
    report("read (peer)", dims({K, N}) + " fp32", peer, 0, bytes);
    const double gb = report("qgemv fp32", dims({1, K, N}), ms, 2.0 * K * N, bytes).second;
    summary["qgemv_fp32_vs_read"] = gb / (bytes / peer * 1e-6);
  }
  const std::pair<const char*, k::qformat> formats[] = {{"int8", k::qformat::int8},
                                                        {"int4", k::qformat::int4},
                                                        {"fp8", k::qformat::fp8_e4m3},
                                                        {"fp6", k::qformat::fp6_e3m2},
                                                        {"fp4", k::qformat::fp4_e2m1}};
  for (const auto& [name, f] : formats) {
    const bool asym = f == k::qformat::int4;
    const int group = f == k::qformat::fp8_e4m3 || f == k::qformat::fp6_e3m2 ? K : 128;
    std::vector<std::uint8_t> data(k::packed_row_bytes(f, K) * N),
        zeros(asym ? std::size_t(N) * (K / group) : 0);
    std::vector<float> scales(std::size_t(N) * (K / group));
    k::quantize_rtn(f, w.data(), std::size_t(N), 1, K, N, group, asym, f == k::qformat::fp4_e2m1,
                    data.data(), scales.data(), asym ? zeros.data() : nullptr);
    const k::qmatrix q{f, N, K, group, data.data(), scales.data(), asym ? zeros.data() : nullptr};
    const double bytes = double(data.size() + zeros.size() + scales.size() * 4);
    const auto [ms, peer] = time_pair(
        [&] {
          k::qgemm(q, {x.data(), 0, 1, nullptr, y.data(), 0, false});
        },
        [&] { read_peer(data.data(), data.size()); });
    const double gb = report((std::string("qgemv ") + name).c_str(),
                             dims({1, K, N}) + (asym         ? " g128 zp"
                                                : group == K ? " per-ch"
                                                             : " g128"),
                             ms, 2.0 * K * N, bytes)
                          .second;
    summary[std::string("qgemv_") + name + "_vs_read"] = gb / (double(data.size()) / peer * 1e-6);
    summary[std::string("qgemv_") + name + "_gbs"] = gb;
  }
}

// W8A8 prefill (256 token rows) on gpt2's fc and proj shapes through the dispatch (activation
// quantization included, one thread: no pool lent; AMX where granted, and then the VNNI tiles
// alone too), timed alternately with the fp32 GEMM of the same shape: w8a8_prefill_vs_fp32 is
// fp32's time over W8A8's (above 1: W8A8 faster).
void bench_w8a8_prefill() {
  if (!wanted("w8a8")) return;
  const int M = 256;
  for (const auto& [K, N] : {std::pair{768, 3072}, std::pair{3072, 768}}) {
    const auto w = fill(std::size_t(K) * N, 7), x = fill(std::size_t(M) * K, 8);
    std::vector<float> y(std::size_t(M) * N);
    std::vector<std::uint8_t> data(std::size_t(K) * N);
    std::vector<float> scales(std::size_t(N) * (K / 128));
    k::quantize_rtn(k::qformat::int8, w.data(), std::size_t(N), 1, K, N, 128, false, false,
                    data.data(), scales.data(), nullptr);
    const k::qmatrix q{k::qformat::int8, N, K, 128, data.data(), scales.data(), nullptr};
    const auto [ms, fp] = time_pair(
        [&] {
          k::qgemm_w8a8(q, {x.data(), 0, M, nullptr, y.data(), 0, false});
        },
        [&] { k::gemm(false, false, M, N, K, 1.0f, x.data(), K, w.data(), N, 0.0f, y.data(), N); });
    const std::string shape = dims({M, K, N});
    report("gemm fp32 (peer)", shape, fp, 2.0 * M * N * K, 4.0 * (double(M) * K + double(K) * N));
    report(k::quant_amx() ? "qgemm w8a8 amx" : "qgemm w8a8 vnni", shape + " g128", ms,
           2.0 * M * N * K, double(M) * K * 4 + double(data.size()));
    summary["w8a8_prefill_vs_fp32_k" + std::to_string(K)] = fp / ms;
    if (k::quant_amx()) {  // the VNNI tiles alone, as on CPUs without AMX
      k::set_quant_amx(false);
      const double vnni = time_ms([&] {
        k::qgemm_w8a8(q, {x.data(), 0, M, nullptr, y.data(), 0, false});
      });
      k::set_quant_amx(true);
      report("qgemm w8a8 vnni", shape + " g128", vnni, 2.0 * M * N * K,
             double(M) * K * 4 + double(data.size()));
    }
  }
}

}  // namespace zf::bench_kernels
