// bench_train_step: zeroflow's side of bench/train_step (the script runs the PyTorch peer beside
// it). Same shapes and measurements as shared/peers/torch_gpt_bench.py:
//   train: zero_grad + forward + cross-entropy + backward + AdamW step; median of --iters.
//   infer: batch 1, 256-token prefill (last-position logits), then per-token KV-cached decode
//          with greedy argmax.
// Prints one line "RESULT {json}" (peak RSS is this process's).
//   bench_train_step --shape tiny|gpt2-124M --mode train|infer [--precision f32|bf16]
//                    [--iters N] [--warmup N] [--gguf FILE] [--prompt 256] [--tokens 64]
//                    [--kv fp32|bf16]
// train bf16: the model's GEMMs in bf16 (train.precision); infer bf16: serve --dtype bf16;
// infer --gguf: the file's weights, its matrices read in place (serve --gguf; bench/decode).
// --kv: the KV cache's rows (engine.kv_dtype; default bf16 with --precision bf16, else fp32).
// GEMM libraries from the tuning table (ZF_GEMM_TUNING, default lazy); the result lists them.
// --device cuda (train): the model, gradients and AdamW state on the GPU (train.device = cuda;
// ZF_CUDA_SIM=1 runs it on the CPU simulation); --compare-cpu 1 then replays the same steps on
// the cpu model from the same weights and reports both loss curves and their largest relative
// difference (scripts/gpu-check's training row).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "kernels/adamw.hpp"
#include "kernels/device.hpp"
#include "kernels/gemm_lib.hpp"
#include "kernels/gemm_table.hpp"
#include "kernels/threads.hpp"
#include "runtime/model/lm_bf16.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/serve/sampling.hpp"
#include "runtime/train/optim.hpp"
#include "storage/gguf_model.hpp"

namespace {

using zf::bench::clk;
using zf::bench::median;
using zf::bench::ms_since;
double peak_rss_mib() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return r.ru_maxrss / 1024.0;
}

}  // namespace

int run(int argc, char** argv) {
  zf::kernels::ensure_openmp_spin();  // oneDNN's threads spin between calls (gemm_lib.hpp)
  std::string shape = "tiny", mode = "train", precision = "f32", gguf, kv_name, device = "cpu";
  int iters = 10, warmup = 3, threads = 2, prompt_len = 256, decode_tokens = 64, compare_cpu = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--shape")
      shape = v;
    else if (a == "--mode")
      mode = v;
    else if (a == "--iters")
      iters = std::stoi(v);
    else if (a == "--warmup")
      warmup = std::stoi(v);
    else if (a == "--threads")
      threads = std::stoi(v);
    else if (a == "--precision")
      precision = v;
    else if (a == "--gguf")
      gguf = v;
    else if (a == "--prompt")
      prompt_len = std::stoi(v);
    else if (a == "--tokens")
      decode_tokens = std::stoi(v);
    else if (a == "--kv")
      kv_name = v;
    else if (a == "--device")
      device = v;
    else if (a == "--compare-cpu")
      compare_cpu = std::stoi(v);
    else {
      std::cerr << "unknown option " << a << "\n";
      return 2;
    }
  }
  zf::model_config m;
  int B = 0, T = 0;
  if (shape == "tiny") {
    m.n_layer = 4;
    m.n_head = 4;
    m.n_embd = 256;
    m.vocab_size = 8192;
    B = 8;
    T = 256;
  } else if (shape == "gpt2-124M") {
    m.n_layer = 12;
    m.n_head = 12;
    m.n_embd = 768;
    m.vocab_size = 50257;
    B = 4;
    T = 256;
  } else {
    std::cerr << "unknown shape " << shape << "\n";
    return 2;
  }
  m.n_positions = 1024;
  zf::kernels::set_num_threads(threads);
  zf::kernels::precision prec = zf::kernels::precision::f32;
  if (!zf::kernels::parse_precision(precision.c_str(), prec) ||
      prec == zf::kernels::precision::f16) {
    std::cerr << "--precision: expected f32 or bf16, got " << precision << "\n";
    return 2;
  }
  // GEMM libraries from the tuning table, measured lazily (in the warm-up) where it has no entry.
  const char* tuning = std::getenv("ZF_GEMM_TUNING");
  zf::kernels::gemm_tuning tmode = zf::kernels::gemm_tuning::lazy;
  if (tuning && *tuning) zf::kernels::parse_gemm_tuning(tuning, tmode);
  for (const auto& w :
       zf::kernels::configure_gemm_tuning(tmode, zf::kernels::default_gemm_table_path()))
    std::cerr << "warning: " << w << "\n";
  if (device != "cpu" && device != "cuda") {
    std::cerr << "--device: cpu or cuda, not " << device << "\n";
    return 2;
  }
  const zf::device where = device == "cuda" ? zf::device::cuda : zf::device::cpu;
  if (where == zf::device::cuda) zf::kernels::gpu_init(0);  // throws without a GPU (or the sim)
  // infer: no gradients; the parameters move into the serving weights below (no second copy on
  // the cpu; copied up on cuda, the host's model only the initialiser)
  zf::transformer model(m, true, mode == "train", mode == "train" ? where : zf::device::cpu);
  model.init_weights(0);
  model.set_precision(prec);
  nlohmann::json res{{"shape", shape},         {"mode", mode},
                     {"precision", precision}, {"threads", threads},
                     {"device", device},       {"params_total", model.layout().total}};
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> tok(0, m.vocab_size - 1);
  if (mode == "train") {
    zf::run_config t;
    t.optimizer.lr = 3e-4;
    t.optimizer.beta1 = 0.9;
    t.optimizer.beta2 = 0.95;
    t.optimizer.eps = 1e-8;
    t.optimizer.weight_decay = 0.1;
    zf::adamw opt(model.layout(), 0, model.layout().total, t.optimizer, where);
    std::vector<int> data(std::size_t(warmup + iters) * B * (T + 1));
    for (auto& x : data) x = tok(rng);
    std::vector<int> in(std::size_t(B) * T), tg(std::size_t(B) * T);
    auto batch = [&](int i) {
      for (int b = 0; b < B; ++b) {
        const int* row = data.data() + (std::size_t(i) * B + b) * (T + 1);
        std::copy(row, row + T, in.data() + std::size_t(b) * T);
        std::copy(row + 1, row + T + 1, tg.data() + std::size_t(b) * T);
      }
    };
    std::vector<double> steps, fwdbwd, upd, losses, all_losses;
    for (int i = 0; i < warmup + iters; ++i) {
      batch(i);
      auto t0 = clk::now();
      model.zero_grad();
      float loss = model.forward_backward(in.data(), tg.data(), B, T);  // waits for its loss
      double t1 = ms_since(t0);
      opt.step(model.params().data(), model.grads().data(), t.optimizer.lr, i + 1, 1.0f);
      if (where == zf::device::cuda) zf::kernels::gpu_synchronize();
      double t2 = ms_since(t0);
      all_losses.push_back(loss);
      if (i >= warmup) {
        steps.push_back(t2);
        fwdbwd.push_back(t1);
        upd.push_back(t2 - t1);
        losses.push_back(loss);
      }
    }
    if (compare_cpu && where == zf::device::cuda) {  // the same steps on the cpu model
      zf::transformer ref(m);
      ref.init_weights(0);
      ref.set_precision(prec);
      zf::adamw ref_opt(ref.layout(), 0, ref.layout().total, t.optimizer);
      std::vector<double> ref_losses;
      double worst = 0;
      for (int i = 0; i < warmup + iters; ++i) {
        batch(i);
        ref.zero_grad();
        ref_losses.push_back(ref.forward_backward(in.data(), tg.data(), B, T));
        ref_opt.step(ref.params().data(), ref.grads().data(), t.optimizer.lr, i + 1, 1.0f);
        worst = std::max(
            worst, std::abs(all_losses[std::size_t(i)] - ref_losses.back()) / ref_losses.back());
      }
      res["losses"] = all_losses;
      res["cpu_losses"] = ref_losses;
      res["max_rel_loss_diff"] = worst;
    }
    double med = median(steps);
    res["B"] = B;
    res["T"] = T;
    res["step_ms_median"] = med;
    res["step_ms_min"] = *std::min_element(steps.begin(), steps.end());
    res["fwdbwd_ms_median"] = median(fwdbwd);
    res["adamw_ms_median"] = median(upd);
    res["tokens_per_s"] = B * T / (med / 1000.0);
    res["first_loss"] = losses.front();
    res["last_loss"] = losses.back();
  } else {
    // The model's paged mode (paged_model over a KV block pool): the forward the serving engine
    // runs, without its scheduling. One sequence, blocks of 16 slots in order.
    std::vector<int> prompt(prompt_len);
    for (auto& x : prompt) x = tok(rng);
    // bf16: the serving engine's --dtype bf16 (bf16 projections and head, bf16 KV rows).
    // --gguf: the file's weights, its matrices read in place (serve --gguf).
    if (where == zf::device::cuda && (!gguf.empty() || prec != zf::kernels::precision::f32)) {
      std::cerr << "--device cuda infers fp32 weights only (no --gguf, --precision f32)\n";
      return 2;
    }
    zf::lm_weights w = where == zf::device::cuda
                           ? zf::copy_lm_weights(model.spec(), model.params().data(), where)
                       : gguf.empty() ? zf::make_lm_weights(model.spec(), std::move(model.params()))
                                      : zf::storage::read_gpt2_gguf(gguf, true).weights;
    if (!gguf.empty()) res["gguf"] = w.quant->method;
    if (prec == zf::kernels::precision::bf16 && gguf.empty()) zf::to_bf16_weights(w);
    const int bs = 16, n_blocks = (m.n_positions + bs - 1) / bs;
    zf::paged_model run(w, prompt_len, 1, threads, where);
    if (kv_name.empty()) kv_name = prec == zf::kernels::precision::bf16 ? "bf16" : "fp32";
    if (kv_name != "fp32" && kv_name != "bf16") {
      std::cerr << "--kv must be fp32 or bf16, not " << kv_name << "\n";
      return 2;
    }
    res["kv_dtype"] = kv_name;
    zf::kv_storage kv(m.n_layer, n_blocks, bs, w.cfg.kv_dim(),
                      kv_name == "bf16" ? zf::kv_dtype::bf16 : zf::kv_dtype::fp32, where);
    std::vector<int> blocks(n_blocks);
    for (int b = 0; b < n_blocks; ++b) blocks[b] = b;
    auto step = [&](const int* ids, int start, int len) {
      zf::lm_chunk c{ids, start, len, blocks.data(), true};
      run.forward({&c, 1}, kv);
      return zf::argmax(run.logits(0), m.vocab_size);
    };
    std::vector<double> pre;
    for (int i = 0; i < warmup + iters; ++i) {
      auto t0 = clk::now();
      step(prompt.data(), 0, prompt_len);
      if (i >= warmup) pre.push_back(ms_since(t0));
    }
    std::vector<double> per_tok;
    for (int r = 0; r < 2 + 5; ++r) {
      int next = step(prompt.data(), 0, prompt_len);
      for (int j = 0; j < decode_tokens; ++j) {
        auto t0 = clk::now();
        next = step(&next, prompt_len + j, 1);
        if (r >= 2) per_tok.push_back(ms_since(t0));
      }
    }
    res["prompt_len"] = prompt_len;
    res["prefill_last_ms_median"] = median(pre);
    res["decode_ms_per_token_median"] = median(per_tok);
    res["weight_bytes"] = double(w.layout.total) * sizeof(float);  // what a decode step reads
  }
  res["peak_rss_MiB"] = peak_rss_mib();
  // Which library ran each GEMM shape, and what each measured there (GFLOP/s).
  nlohmann::json gemms = nlohmann::json::array();
  for (const auto& e : zf::kernels::gemm_table_entries()) {
    nlohmann::json lib;
    for (const auto& t : e.trials) lib[zf::kernels::gemm_lib_name(t.lib)] = t.ok ? t.gflops : -1.0;
    gemms.push_back({{"precision", zf::kernels::precision_name(e.prec)},
                     {"op", std::string(e.trans_a ? "T" : "N") + (e.trans_b ? "T" : "N")},
                     {"m", e.m},
                     {"n", e.n},
                     {"k", e.k},
                     {"chosen", zf::kernels::gemm_lib_name(e.best)},
                     {"gflops", lib}});
  }
  res["gemm"] = gemms;
  res["gemm_library"] = zf::kernels::gemm_lib_name(zf::kernels::process_gemm_lib(prec));
  std::cout << "RESULT " << res.dump() << std::endl;
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // no GPU for --device cuda, a bad --gguf, ...
    std::cerr << "bench_train_step: " << e.what() << "\n";
    return 1;
  }
}
