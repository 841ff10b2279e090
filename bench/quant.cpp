// bench_quant: what the quantized formats buy in the serving forward (issue 14). One model
// (the gpt2-124M shape with random weights, or --checkpoint DIR), quantized in memory by
// round-to-nearest into each scheme, run by the model's paged mode (the serving engine's forward
// without its scheduling) on 2 threads: batch-1 decode ms/token after a 256-token prompt, the
// 256-token prefill, and the bytes of weights each decode step reads (every projection and the
// head: fp32 4 bytes per weight, a scheme its packed data + scales + zero points). The fp32 model
// runs in the same process, before and after the schemes, as the peer every ratio divides.
//
//   bench_quant [--checkpoint DIR] [--schemes w8a8,w4a16,fp8,fp6,fp4,bf16] [--tokens 64]
//               [--reps 3]
// bf16 is `serve --dtype bf16`'s weights (runtime/model/lm_bf16: projections and head as bf16
// rows, fp32 math; the KV cache stays fp32 here so the row measures the weights alone).
// Last line: quant decode_speedup_w4=X w8=Y fp6=Z ... bf16=W
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "kernels/threads.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/lm_bf16.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/quant/quantize_model.hpp"
#include "runtime/serve/sampling.hpp"
#include "storage/lm_loader.hpp"

namespace {

using zf::bench::clk;
using zf::bench::median;
using zf::bench::ms_since;

struct options {
  std::string checkpoint;
  std::vector<std::string> schemes = {"w8a8", "w4a16", "fp8", "fp6", "fp4", "bf16"};
  int tokens = 64, reps = 3, threads = 2, prompt = 256;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) zf::fail("{}: needs a value", a);
    const std::string v = argv[++i];
    if (a == "--checkpoint") {
      o.checkpoint = v;
    } else if (a == "--schemes") {
      o.schemes.clear();
      for (std::size_t p = 0; p <= v.size();) {
        const std::size_t q = std::min(v.find(',', p), v.size());
        o.schemes.push_back(v.substr(p, q - p));
        if (o.schemes.back() != "bf16") zf::quant::scheme_named(o.schemes.back(), 0, "--schemes");
        p = q + 1;
      }
    } else if (a == "--tokens") {
      o.tokens = std::stoi(v);
    } else if (a == "--reps") {
      o.reps = std::stoi(v);
    } else {
      zf::fail("unknown option {} (see the header of bench/quant.cpp)", a);
    }
  }
  return o;
}

// Bytes of the weights one decode step reads in fp32: every projection and the head.
std::size_t fp32_bytes(const zf::model_spec& s) {
  const std::size_t per_layer =
      std::size_t(s.hidden) * s.qkv_dim() + std::size_t(s.q_dim()) * s.hidden +
      std::size_t(s.hidden) * s.up_dim() + std::size_t(s.intermediate) * s.hidden;
  return 4 * (per_layer * s.n_layer + std::size_t(s.hidden) * s.vocab_size);
}

struct figures {
  std::string name;
  double decode_ms = 0, prefill_ms = 0;
  std::size_t bytes = 0;
  int agree = 0;  // greedy tokens equal to fp32's, of the first `tokens`
};

figures measure(const std::string& name, zf::lm_weights& w, const options& o,
                const std::vector<int>& prompt, const std::vector<int>* ref_tokens,
                std::vector<int>* tokens_out) {
  const zf::model_spec& s = w.cfg;
  const int bs = 16, n_blocks = (s.max_positions + bs - 1) / bs;
  zf::paged_model run(w, o.prompt, 1, o.threads);
  zf::kv_storage kv(s.n_layer, n_blocks, bs, s.kv_dim());
  std::vector<int> blocks(std::size_t(n_blocks), 0);
  for (int b = 0; b < n_blocks; ++b) blocks[std::size_t(b)] = b;
  auto step = [&](const int* ids, int start, int len) {
    zf::lm_chunk c{ids, start, len, blocks.data(), true};
    run.forward({&c, 1}, kv);
    return zf::argmax(run.logits(0), s.vocab_size);
  };
  figures f;
  f.name = name;
  std::vector<double> pre, per_tok;
  std::vector<int> toks;
  for (int r = 0; r < o.reps + 1; ++r) {  // the first rep warms up
    auto t0 = clk::now();
    int next = step(prompt.data(), 0, o.prompt);
    if (r > 0) pre.push_back(ms_since(t0));
    for (int j = 0; j < o.tokens; ++j) {
      if (r == 0) toks.push_back(next);
      t0 = clk::now();
      next = step(&next, o.prompt + j, 1);
      if (r > 0) per_tok.push_back(ms_since(t0));
    }
  }
  f.prefill_ms = median(pre);
  f.decode_ms = median(per_tok);
  f.bytes = w.quant ? w.quant->bytes() : fp32_bytes(s);
  if (w.quant && !w.quant->head) f.bytes += 4 * std::size_t(s.hidden) * s.vocab_size;
  if (ref_tokens)
    for (std::size_t i = 0; i < toks.size(); ++i) f.agree += toks[i] == (*ref_tokens)[i];
  if (tokens_out) *tokens_out = toks;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    zf::kernels::set_num_threads(o.threads);
    zf::lm_weights w;
    if (!o.checkpoint.empty()) {
      w = zf::storage::load_lm_weights(o.checkpoint);
    } else {
      zf::model_config m;
      m.n_layer = 12;
      m.n_head = 12;
      m.n_embd = 768;
      m.vocab_size = 50257;
      m.n_positions = 1024;
      zf::transformer model(m, true, false);
      model.init_weights(0);
      w = zf::copy_lm_weights(model.spec(), model.params().data());
    }
    if (w.cfg.max_positions < o.prompt + o.tokens) zf::fail("the model's context is too short");
    std::mt19937 rng(1);
    std::vector<int> prompt(std::size_t(o.prompt), 0);
    for (auto& x : prompt) x = static_cast<int>(rng() % std::uint32_t(w.cfg.vocab_size));
    std::cout << fmt::format(
        "bench_quant: {} layers x {} wide, vocab {}; {}-token prompt, {} decode tokens x {} reps, "
        "{} threads\n",
        w.cfg.n_layer, w.cfg.hidden, w.cfg.vocab_size, o.prompt, o.tokens, o.reps, o.threads);
    std::vector<int> ref;
    std::vector<figures> rows;
    rows.push_back(measure("fp32", w, o, prompt, nullptr, &ref));
    for (const std::string& name : o.schemes) {
      const auto t0 = clk::now();
      std::shared_ptr<zf::lm_quant> lq;
      if (name == "bf16") {  // serve --dtype bf16: every projection and the head as bf16 rows
        lq = zf::bf16_quant_of(w);
      } else {
        zf::quant::quantize_options q;
        q.s = zf::quant::scheme_named(name);
        lq = zf::quant::quantize_model(w.cfg, w.store.data(), q, nullptr);
      }
      const double qs = ms_since(t0) / 1000;
      zf::attach_quant(w, std::move(lq));
      rows.push_back(measure(name, w, o, prompt, &ref, nullptr));
      zf::attach_quant(w, nullptr);
      std::cout << fmt::format("  {} quantized in {:.1f} s\n", name, qs);
    }
    figures again = measure("fp32 (again)", w, o, prompt, nullptr, nullptr);
    const double base = 0.5 * (rows[0].decode_ms + again.decode_ms);
    const double base_pre = 0.5 * (rows[0].prefill_ms + again.prefill_ms);
    rows.push_back(again);
    std::cout << fmt::format("{:<13} {:>10} {:>8} {:>12} {:>8} {:>10} {:>8} {:>7}\n", "weights",
                             "decode ms", "speedup", "prefill ms", "x fp32", "MB/token", "GB/s",
                             "greedy");
    for (const figures& f : rows)
      std::cout << fmt::format(
          "{:<13} {:>10.2f} {:>8.2f} {:>12.1f} {:>8.2f} {:>10.1f} {:>8.1f} {:>7}\n", f.name,
          f.decode_ms, base / f.decode_ms, f.prefill_ms, f.prefill_ms / base_pre, f.bytes / 1e6,
          f.bytes / 1e6 / f.decode_ms,
          f.name.starts_with("fp32") ? "-" : fmt::format("{}/{}", f.agree, o.tokens));
    auto speedup = [&](const std::string& n) {
      for (const figures& f : rows)
        if (f.name == n) return base / f.decode_ms;
      return 0.0;
    };
    std::cout << "(greedy: decode tokens equal to fp32's; random weights make that a weak signal, "
                 "a trained --checkpoint a strong one)\n";
    std::cout << fmt::format(
        "quant decode_speedup_w4={:.2f} w8={:.2f} fp6={:.2f} fp8={:.2f} fp4={:.2f} bf16={:.2f} "
        "fp32_decode_ms={:.2f} fp32_prefill_ms={:.1f}\n",
        speedup("w4a16"), speedup("w8a8"), speedup("fp6"), speedup("fp8"), speedup("fp4"),
        speedup("bf16"), base, base_pre);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_quant: " << e.what() << "\n";
    return 1;
  }
}
