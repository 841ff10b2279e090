#include "pipelines/quantize_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "actors/engine.hpp"
#include "kernels/threads.hpp"
#include "pipelines/pipeline.hpp"
#include "pipelines/serve_cli.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/quant/quantize_model.hpp"
#include "runtime/serve/serve_client.hpp"
#include "storage/blend.hpp"
#include "storage/checkpoint.hpp"
#include "storage/dataset.hpp"
#include "storage/fs_util.hpp"
#include "storage/lm_loader.hpp"
#include "storage/quant_checkpoint.hpp"
#include "storage/token_shard.hpp"

namespace fs = std::filesystem;

namespace zf {
namespace {

constexpr std::size_t k_corpus_tokens = 4u << 20;  // calibration draws from at most this head

// Token ids of the training part of the run's corpus (its blend when it has sources): the
// validation tail, which `score --ppl` measures, is never calibrated on.
std::vector<int> corpus_ids(const run_config& cfg, const tokenizer& tok) {
  const fs::path shard_path =
      storage::prepare_data(cfg.data, data_dir(cfg), tok, tokenizer_id(cfg));
  const auto shard = storage::token_shard::open(shard_path);
  const auto train = static_cast<std::size_t>(double(shard.size()) * (1 - cfg.data.val_fraction));
  std::vector<int> ids(std::min(train, k_corpus_tokens));
  shard.read(0, ids.size(), ids.data());
  return ids;
}

// windows texts of t tokens sampled (temperature 1) from w itself, all at once on the serving
// engine (its batches), for a model that comes without a corpus.
std::vector<int> sampled_ids(const lm_weights& w, const tokenizer& tok, int windows, int t) {
  if (w.quant) fail("sampled calibration: the model is already quantized");
  auto engine = actors::make_engine(copy_lm_weights(w.cfg, w.store.data()), tokenizer(tok),
                                    run_config{}.engine);
  std::vector<std::string> texts(static_cast<std::size_t>(windows)), errors(texts.size());
  constexpr int k_wave = 32;  // requests in flight at once: the engine batches them
  for (int w0 = 0; w0 < windows; w0 += k_wave) {
    std::vector<std::thread> threads;
    for (int i = w0; i < std::min(windows, w0 + k_wave); ++i)
      threads.emplace_back([&, i] {
        try {
          serve::completion_request r;
          r.prompt = tok.encode_prompt("\n");
          r.max_tokens = t;
          r.ignore_eos = true;
          r.sampling.temperature = 1;
          r.sampling.seed = 1000 + static_cast<uint64_t>(i);
          texts[std::size_t(i)] = serve::complete(*engine, std::move(r));
        } catch (const std::exception& e) {
          errors[std::size_t(i)] = e.what();
        }
      });
    for (auto& th : threads) th.join();
  }
  std::vector<int> ids;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (!errors[i].empty()) fail("sampling calibration text: {}", errors[i]);
    const auto v = tok.encode(texts[i]);
    ids.insert(ids.end(), v.begin(), v.end());
  }
  return ids;
}

}  // namespace

void add_quant_flags(CLI::App* cmd, quant_flags& f) {
  cmd->add_option("--method", f.method, "rtn (round to nearest) or gptq")->capture_default_str();
  cmd->add_option("--group-size", f.group_size,
                  "inputs per scale (a multiple of 32 dividing every layer's inputs); 0: the "
                  "scheme's default")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--lorc-rank", f.lorc_rank, "LoRC low-rank error correction rank; 0: none")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--lkd-steps", f.lkd_steps,
                  "layer-by-layer distillation steps per layer (ZeroQuant LKD); 0: none")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_flag("--keep-head", f.keep_head, "leave the LM head in fp32");
  cmd->add_option("--calibration", f.calibration,
                  "calibration text for gptq / LKD (default: the checkpoint's own corpus, or "
                  "text the model samples)");
  cmd->add_option("--calibration-windows", f.calibration_windows,
                  "calibration windows of min(context, 256) tokens")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
}

std::shared_ptr<lm_quant> quantize_weights(const lm_weights& w, const tokenizer& tok,
                                           const quant_flags& f, const std::string& scheme_flag,
                                           const run_config* corpus_cfg) {
  if (w.quant) fail("{}: the model is already quantized ({})", scheme_flag, w.quant->scheme);
  quant::quantize_options o;
  o.s = quant::scheme_named(f.scheme, f.group_size, scheme_flag);
  o.method = f.method;
  o.lorc_rank = f.lorc_rank;
  o.head = !f.keep_head;
  o.lkd_steps = f.lkd_steps;
  quant::calibration cal;
  const bool calibrate = o.method == "gptq" || f.lkd_steps > 0;
  if (calibrate) {
    const int t = std::min(w.cfg.max_positions, 256);
    std::vector<int> ids;
    std::string what;
    if (!f.calibration.empty()) {
      ids = tok.encode(storage::read_text_file(f.calibration));
      what = "--calibration " + f.calibration;
    } else if (corpus_cfg) {
      ids = corpus_ids(*corpus_cfg, tok);
      what = "the checkpoint's corpus";
    } else {
      ids = sampled_ids(w, tok, f.calibration_windows, t);
      what = "text sampled from the model";
    }
    cal = quant::calibration_windows(ids, f.calibration_windows, t, what);
  }
  return quant::quantize_model(w.cfg, w.store.data(), o, calibrate ? &cal : nullptr);
}

namespace {

struct quantize_args {
  std::string checkpoint, hf, data_dir, out;
  quant_flags q;
  int threads = 0;
};
quantize_args g_args;
CLI::App* g_cmd = nullptr;

std::uint64_t folder_bytes(const fs::path& dir) {
  std::uint64_t n = 0;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

int run_quantize() {
  auto& a = g_args;
  kernels::set_num_threads(a.threads);
  if (a.checkpoint.empty() == a.hf.empty())
    fail("quantize: give exactly one of --checkpoint DIR and --hf DIR");
  if (storage::has_checkpoint(a.out))
    fail("--out {}: already holds checkpoints; quantize into a new folder", a.out);
  const auto t0 = std::chrono::steady_clock::now();
  run_config cfg;
  int step = 0;
  lm_weights w;
  if (!a.checkpoint.empty()) {
    const auto m = storage::read_checkpoint_manifest(a.checkpoint);
    if (m.quantized())
      fail(
          "--checkpoint {}: already quantized ({}, {}); quantize the float checkpoint it came "
          "from",
          m.dir.string(), m.quant_scheme, m.quant_method);
    auto cm = storage::load_checkpoint_model(m.dir);
    w = std::move(cm.weights);
    cfg = std::move(cm.config);
    step = m.step;
  } else {
    w = load_hf_weights(a.hf);
    cfg.model = config_of(w.cfg);
    cfg.data.tokenizer = "tokenizer.json";  // copied beside the checkpoint (storage/lm_loader)
  }
  if (!a.data_dir.empty()) cfg.data.data_dir = a.data_dir;
  const tokenizer tok = a.hf.empty() ? open_tokenizer(cfg).first
                                     : tokenizer::load_hf(fs::path(a.hf) / "tokenizer.json");
  auto q = quantize_weights(w, tok, a.q, "--scheme", a.hf.empty() ? &cfg : nullptr);
  const std::size_t qbytes = q->bytes();
  attach_quant(w, q);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json state = {
      {"quantized_from", fs::absolute(a.hf.empty() ? a.checkpoint : a.hf).string()},
      {"scheme", q->scheme},
      {"method", q->method},
      {"group_size", a.q.group_size},
      {"lorc_rank", a.q.lorc_rank},
      {"lkd_steps", a.q.lkd_steps},
      {"calibration", a.q.calibration},
      {"seconds", secs}};
  const fs::path dir = storage::save_quantized_checkpoint(a.out, step, to_toml(cfg), state, w);
  if (!a.hf.empty())  // the tokenizer travels with the model (data.tokenizer is relative)
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      if (fs::exists(fs::path(a.hf) / f)) fs::copy_file(fs::path(a.hf) / f, fs::path(a.out) / f);
  std::cout << nlohmann::json{{"checkpoint", dir.string()},
                              {"scheme", q->scheme},
                              {"method", q->method},
                              {"quant_bytes", qbytes},
                              {"checkpoint_bytes", folder_bytes(dir)},
                              {"float_bytes", w.layout.total * sizeof(float)},
                              {"seconds", secs}}
                   .dump()
            << "\n";
  return 0;
}

}  // namespace

void add_quantize_subcommand(CLI::App& app) {
  auto& a = g_args;
  g_cmd = app.add_subcommand("quantize", "quantize a model into a new checkpoint (issue 14)");
  g_cmd->add_option("--checkpoint", a.checkpoint, "a zeroflow run, checkpoints/ or step folder");
  g_cmd->add_option("--hf", a.hf, "a Hugging Face folder (config.json, safetensors, tokenizer)");
  g_cmd->add_option("--data-dir", a.data_dir, "folder with the corpus and gpt2/ tokenizer files");
  g_cmd->add_option("--scheme", a.q.scheme, "w8a8, w4a16, fp8, fp8_e5m2, fp6 or fp4")->required();
  g_cmd->add_option("--out", a.out, "the new checkpoint folder")->required();
  g_cmd->add_option("--threads", a.threads, "compute threads; 0: all cores");
  add_quant_flags(g_cmd, a.q);
}

bool run_quantize_subcommand() {
  if (!g_cmd || !*g_cmd) return false;
  run_quantize();
  return true;
}

}  // namespace zf
