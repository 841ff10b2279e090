#include "pipelines/score_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "kernels/dispatch.hpp"
#include "kernels/threads.hpp"
#include "pipelines/quantize_cli.hpp"
#include "pipelines/serve_cli.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/lm_bf16.hpp"
#include "runtime/model/score.hpp"
#include "storage/fs_util.hpp"
#include "storage/lm_loader.hpp"

namespace zf {
namespace {

struct score_args {
  std::string checkpoint, hf, data_dir, input, gguf;
  bool ppl = false, batch_invariant = false;
  int batch = 8, max_len = 0, window = 0, stride = 0, threads = 0;
  quant_flags q;  // in-memory quantization before scoring (--quantize, pipelines/quantize_cli)
  std::string dtype = "fp32";  // bf16: projections and head as bf16 (runtime/model/lm_bf16)
};
score_args g_args;
CLI::App* g_cmd = nullptr;

// One input line as a score item: {"text"} scores every token after the first (after BOS when
// the tokenizer adds one); {"prompt", "completion"} scores the completion's tokens given the
// prompt's (each tokenized on its own, as a rollout produces them).
score_item parse_line(const tokenizer& tok, const std::string& line, int lineno,
                      const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail("{}:{}: not valid JSON: {}", file, lineno, e.what());
  }
  auto str = [&](const char* key) {
    if (!j.contains(key) || !j[key].is_string())
      fail("{}:{}: \"{}\" must be a string", file, lineno, key);
    return j[key].get<std::string>();
  };
  if (!j.is_object()) fail("{}:{}: expected a JSON object", file, lineno);
  score_item it;
  if (j.contains("text")) {
    it.ids = tok.encode_prompt(str("text"));
    it.first = 1;
  } else if (j.contains("prompt") || j.contains("completion")) {
    it.ids = tok.encode_prompt(str("prompt"));
    it.first = static_cast<int>(it.ids.size());
    const auto c = tok.encode(str("completion"));
    it.ids.insert(it.ids.end(), c.begin(), c.end());
    if (it.first < 1 || c.empty())
      fail("{}:{}: the prompt and the completion must each have at least one token", file, lineno);
  } else {
    fail("{}:{}: expected {{\"text\": ...}} or {{\"prompt\": ..., \"completion\": ...}}", file,
         lineno);
  }
  return it;
}

int run_score() {
  auto& a = g_args;
  kernels::set_num_threads(a.threads);
  kernels::batch_invariant_scope invariant(a.batch_invariant);
  const weight_dtype dtype = parse_weight_dtype(a.dtype, "--dtype");
  if (dtype != weight_dtype::fp32 && !a.q.scheme.empty())
    fail("--dtype {} cannot be combined with --quantize {}: choose one format for the linears",
         a.dtype, a.q.scheme);
  auto [w, tok] = load_serving_model(a.checkpoint, a.hf, a.data_dir, a.gguf);
  to_serving_weights(w, dtype, "--dtype " + a.dtype);  // refuses a quantized checkpoint by name
  transformer model(w.cfg, true, false);
  std::memcpy(model.params().data(), w.store.data(), w.store.size() * sizeof(float));
  const int ctx = w.cfg.max_positions;
  std::string quant_json;
  if (!a.q.scheme.empty()) {  // the checkpoint's corpus calibrates GPTQ when --calibration is not
    std::optional<run_config> cfg;
    if (!a.checkpoint.empty()) cfg = storage::load_checkpoint_config(a.checkpoint, a.data_dir);
    attach_quant(w, quantize_weights(w, tok, a.q, "--quantize", cfg ? &*cfg : nullptr));
  }
  if (w.quant) {
    model.set_quant(w.quant);
    quant_json = fmt::format(", \"scheme\": \"{}\", \"method\": \"{}\", \"quant_bytes\": {}",
                             w.quant->scheme, w.quant->method, w.quant->bytes());
  }
  if (a.ppl) {
    const std::string text = storage::read_text_file(a.input);
    const std::vector<int> ids = tok.encode_prompt(text);
    const int window = a.window ? a.window : ctx, stride = a.stride ? a.stride : window;
    const ppl_result r = perplexity(model, ids, window, stride);
    std::cout << fmt::format(
        "{{\"ppl\": {:.6g}, \"nll\": {:.6g}, \"tokens\": {}, \"window\": {}, "
        "\"stride\": {}{}}}\n",
        r.ppl(), r.nll_sum / double(r.tokens), r.tokens, window, stride, quant_json);
    return 0;
  }
  std::ifstream in(a.input);
  if (!in) fail("score: cannot read {}", a.input);
  std::vector<score_item> items;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n)
    if (line.find_first_not_of(" \t\r") != std::string::npos)
      items.push_back(parse_line(tok, line, n, a.input));
  std::size_t longest = 2;
  for (auto& it : items) longest = std::max(longest, it.ids.size());
  const int max_len = a.max_len ? a.max_len : static_cast<int>(std::min<std::size_t>(longest, ctx));
  scorer sc(model, max_len, std::min<int>(a.batch, std::max<std::size_t>(1, items.size())));
  const auto results = sc.score(items);
  for (std::size_t i = 0; i < items.size(); ++i) {
    nlohmann::ordered_json o;
    std::vector<int> scored(items[i].ids.begin() + items[i].first, items[i].ids.end());
    std::vector<std::string> pieces;
    for (int id : scored) pieces.push_back(tok.decode(std::vector<int>{id}));
    o["tokens"] = scored;
    o["text_pieces"] = pieces;
    o["token_logprobs"] = results[i].logprobs;
    o["sum_logprob"] = results[i].sum;
    std::cout << o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

}  // namespace

void add_score_subcommand(CLI::App& app) {
  auto& a = g_args;
  g_cmd = app.add_subcommand("score",
                             "per-token log-probs of texts (JSON lines) or perplexity (--ppl)");
  g_cmd->add_option("--checkpoint", a.checkpoint, "a zeroflow run, checkpoints/ or step folder");
  g_cmd->add_option("--hf", a.hf, "a Hugging Face folder (config.json, safetensors, tokenizer)");
  g_cmd->add_option("--gguf", a.gguf, "a GGUF file (GPT-2 or Llama, its tokenizer inside)");
  g_cmd->add_option("--data-dir", a.data_dir, "folder with the gpt2/ tokenizer files");
  g_cmd->add_option("--input", a.input, "JSON lines, or a UTF-8 text file with --ppl")->required();
  g_cmd->add_flag("--ppl", a.ppl, "perplexity of the whole text file");
  g_cmd->add_flag("--batch-invariant", a.batch_invariant,
                  "batch-invariant kernels: the bits `serve --batch-invariant` gives");
  g_cmd->add_option("--batch", a.batch, "sequences per forward")->check(CLI::Range(1, 4096));
  g_cmd->add_option("--max-len", a.max_len, "longest sequence accepted; 0: the longest given")
      ->check(CLI::Range(0, 1 << 24));
  g_cmd->add_option("--window", a.window, "--ppl: tokens per window; 0: the model's context")
      ->check(CLI::Range(0, 1 << 24));
  g_cmd->add_option("--stride", a.stride, "--ppl: tokens a window moves; 0: the window")
      ->check(CLI::Range(0, 1 << 24));
  g_cmd->add_option("--threads", a.threads, "compute threads; 0: all cores");
  g_cmd->add_option("--quantize", a.q.scheme,
                    "score the model quantized in memory: w8a8, w4a16, fp8, fp8_e5m2, fp6, fp4");
  add_quant_flags(g_cmd, a.q);
  g_cmd
      ->add_option("--dtype", a.dtype,
                   "weights: fp32, bf16 (projections and LM head as bf16, fp32 math), or "
                   "llama.cpp's f16, q8_0, q4_0 (quantized at load)")
      ->check(CLI::IsMember({"fp32", "bf16", "f16", "q8_0", "q4_0"}));
}

bool run_score_subcommand() {
  if (!g_cmd || !*g_cmd) return false;
  run_score();
  return true;
}

}  // namespace zf
