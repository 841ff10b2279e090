// Checkpoints <-> Hugging Face folders (declared in checkpoint.hpp): the canonical layout
// (runtime/model/layout.hpp) to transformers' names and orientation, and back through the loader
// that serving uses (storage/hf_loader.cpp), so export and `serve --hf` / fine-tuning read the
// same.
//   gpt2:  the canonical names are Hugging Face GPT-2's (Conv1D [in, out]); written as they are.
//   llama: LlamaForCausalLM's "model." names; the fused [in, out] qkv_proj and gate_up_proj are
//          split into q/k/v and gate/up and transposed to nn.Linear's [out, in]. A Llama MoE
//          that Mixtral can hold is written as MixtralForCausalLM (others are refused, saying
//          why).
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/lm_weights.hpp"
#include "storage/checkpoint.hpp"
#include "storage/fs_util.hpp"
#include "storage/safetensors.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
namespace {

// A float config value as the short decimal it was written as (1e-05, not 9.99999974e-06).
double decimal(float v) {
  return std::stod(fmt::format("{}", v));
}

// One exported tensor: its data in the exported orientation (owned).
struct out_tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Columns [c0, c0 + n) of a row-major [rows, cols] matrix, transposed: [n, rows].
std::vector<float> columns_t(const float* m, std::size_t rows, std::size_t cols, std::size_t c0,
                             std::size_t n) {
  std::vector<float> out(n * rows);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < n; ++j) out[j * rows + r] = m[r * cols + c0 + j];
  return out;
}

nlohmann::ordered_json gpt2_config(const model_spec& s) {
  nlohmann::ordered_json c;
  c["model_type"] = "gpt2";
  c["architectures"] = {"GPT2LMHeadModel"};
  c["n_layer"] = s.n_layer;
  c["n_head"] = s.n_head;
  c["n_embd"] = s.hidden;
  c["n_positions"] = s.max_positions;
  c["n_ctx"] = s.max_positions;
  c["vocab_size"] = s.vocab_size;
  c["layer_norm_epsilon"] = decimal(s.norm_eps);
  c["activation_function"] = "gelu_new";
  if (s.intermediate != 4 * s.hidden) c["n_inner"] = s.intermediate;
  if (!s.tied_head) c["tie_word_embeddings"] = false;
  return c;
}

nlohmann::ordered_json llama_config(const model_spec& s) {
  nlohmann::ordered_json c;
  c["model_type"] = "llama";
  c["architectures"] = {"LlamaForCausalLM"};
  c["hidden_size"] = s.hidden;
  c["intermediate_size"] = s.intermediate;
  c["num_hidden_layers"] = s.n_layer;
  c["num_attention_heads"] = s.n_head;
  c["num_key_value_heads"] = s.n_kv_head;
  c["head_dim"] = s.head_dim;
  c["max_position_embeddings"] = s.max_positions;
  c["rms_norm_eps"] = decimal(s.norm_eps);
  c["rope_theta"] = decimal(s.rope_theta);
  if (s.rope.type == rope_scaling::kind::linear) {
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", s.rope.factor}};
  } else if (s.rope.type == rope_scaling::kind::llama3) {
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", s.rope.factor},
                         {"low_freq_factor", s.rope.low_freq_factor},
                         {"high_freq_factor", s.rope.high_freq_factor},
                         {"original_max_position_embeddings", s.rope.original_max_positions}};
  }
  c["tie_word_embeddings"] = s.tied_head;
  c["attention_bias"] = s.attn_bias;
  c["mlp_bias"] = false;
  c["hidden_act"] = "silu";
  c["vocab_size"] = s.vocab_size;
  if (s.bos_id >= 0) c["bos_token_id"] = s.bos_id;
  if (s.eos_id >= 0) c["eos_token_id"] = s.eos_id;
  return c;
}

// Why s is no MixtralForCausalLM ("" when it is one): every layer an MoE of the same experts, a
// softmax router whose top-k (k >= 2) gates are renormalised and nothing Mixtral lacks.
std::string mixtral_gap(const model_spec& s) {
  if (s.arch != model_arch::llama)
    return "a GPT-2 MoE (Hugging Face has no GPT-2 Mixture-of-Experts architecture)";
  for (int l = 0; l < s.n_layer; ++l)
    if (s.moe.experts_of(l) != s.moe.experts_of(0))
      return "not every layer is an MoE layer of the same experts (Mixtral's layers all are)";
  if (s.moe.residual) return "PR-MoE's residual MLP (model.moe.residual)";
  if (s.moe.router != moe_router::softmax) return "a sigmoid router (Mixtral's is softmax)";
  if (s.moe.top_k < 2 || !s.moe.norm_topk)
    return "gates that are not renormalised top-k (Mixtral renormalises its top_k >= 2 gates)";
  if (s.moe.router_bias()) return "DeepSeek-V3's routing bias (model.moe.bias_update_rate)";
  if (s.moe.gate_scale != 1.0) return "a gate scale (model.moe.gate_scale)";
  if (s.attn_bias) return "attention biases";
  return "";
}

nlohmann::ordered_json mixtral_config(const model_spec& s) {
  nlohmann::ordered_json c = llama_config(s);
  c["model_type"] = "mixtral";
  c["architectures"] = {"MixtralForCausalLM"};
  c["intermediate_size"] = s.moe.expert_intermediate;
  c["num_local_experts"] = s.moe.experts_of(0);
  c["num_experts_per_tok"] = s.moe.top_k;
  c["router_aux_loss_coef"] = s.moe.aux_loss_coef;
  c["output_router_logits"] = false;
  c["sliding_window"] = nullptr;
  c.erase("attention_bias");
  c.erase("mlp_bias");
  return c;
}

// The Llama tensors under transformers' names, from the canonical flat parameters (an MoE layer:
// Mixtral's block_sparse_moe, gate [E, C] and per expert w1 (gate), w3 (up) [Ie, C], w2 [C, Ie]).
std::vector<out_tensor> llama_tensors(const model_spec& s, const param_layout& L, const float* p) {
  const std::size_t C = s.hidden, Q = s.q_dim(), KV = s.kv_dim(), D = s.qkv_dim(),
                    I = s.intermediate;
  const int64_t c = int64_t(C), q = int64_t(Q), kv = int64_t(KV), i = int64_t(I);
  std::vector<out_tensor> out;
  auto copy = [&](std::string name, const float* src, std::vector<int64_t> shape) {
    std::size_t n = 1;
    for (auto d : shape) n *= std::size_t(d);
    out.push_back({std::move(name), std::move(shape), std::vector<float>(src, src + n)});
  };
  auto g = L.globals<const float>(p);
  copy("model.embed_tokens.weight", g.tok_emb, {s.vocab_size, c});
  for (int l = 0; l < s.n_layer; ++l) {
    const auto b = L.block<const float>(p, l);
    const std::string h = "model.layers." + std::to_string(l) + ".";
    copy(h + "input_layernorm.weight", b.norm1_w, {c});
    out.push_back({h + "self_attn.q_proj.weight", {q, c}, columns_t(b.qkv_w, C, D, 0, Q)});
    out.push_back({h + "self_attn.k_proj.weight", {kv, c}, columns_t(b.qkv_w, C, D, Q, KV)});
    out.push_back({h + "self_attn.v_proj.weight", {kv, c}, columns_t(b.qkv_w, C, D, Q + KV, KV)});
    if (b.qkv_b) {
      copy(h + "self_attn.q_proj.bias", b.qkv_b, {q});
      copy(h + "self_attn.k_proj.bias", b.qkv_b + Q, {kv});
      copy(h + "self_attn.v_proj.bias", b.qkv_b + Q + KV, {kv});
    }
    out.push_back({h + "self_attn.o_proj.weight", {c, q}, columns_t(b.o_w, Q, C, 0, C)});
    if (b.o_b) copy(h + "self_attn.o_proj.bias", b.o_b, {c});
    copy(h + "post_attention_layernorm.weight", b.norm2_w, {c});
    if (const int E = s.moe.experts_of(l)) {
      const std::size_t Ie = s.moe.expert_intermediate;
      const int64_t e64 = E, ie = int64_t(Ie);
      const std::string m = h + "block_sparse_moe.";
      out.push_back({m + "gate.weight", {e64, c}, columns_t(b.moe.router_w, C, E, 0, E)});
      for (int e = 0; e < E; ++e) {
        const std::string x = m + "experts." + std::to_string(e) + ".";
        const float *up = b.moe.expert_up_w(e), *down = b.moe.expert_down_w(e);
        out.push_back({x + "w1.weight", {ie, c}, columns_t(up, C, 2 * Ie, 0, Ie)});
        out.push_back({x + "w2.weight", {c, ie}, columns_t(down, Ie, C, 0, C)});
        out.push_back({x + "w3.weight", {ie, c}, columns_t(up, C, 2 * Ie, Ie, Ie)});
      }
      continue;
    }
    out.push_back({h + "mlp.gate_proj.weight", {i, c}, columns_t(b.up_w, C, 2 * I, 0, I)});
    out.push_back({h + "mlp.up_proj.weight", {i, c}, columns_t(b.up_w, C, 2 * I, I, I)});
    out.push_back({h + "mlp.down_proj.weight", {c, i}, columns_t(b.down_w, I, C, 0, C)});
  }
  copy("model.norm.weight", g.normf_w, {c});
  if (g.head) copy("lm_head.weight", g.head, {s.vocab_size, c});
  return out;
}

bool holds_checkpoints(const fs::path& root) {
  if (fs::exists(root / "latest")) return true;
  if (!fs::is_directory(root)) return false;
  for (const auto& e : fs::directory_iterator(root))
    if (e.path().filename().string().starts_with("step-")) return true;
  return false;
}

}  // namespace

fs::path export_safetensors(const fs::path& dir, const fs::path& file) {
  if (fs::exists(file)) fail("export: {} exists; refusing to overwrite it", file.string());
  auto head = read_manifest(dir);
  run_config cfg;
  apply_toml(cfg, head.config_toml, (head.dir / "manifest").string());
  const model_spec spec = spec_of(cfg.model);
  const bool moe = spec.moe.any();
  if (const std::string gap = moe ? mixtral_gap(spec) : ""; !gap.empty())
    fail(
        "export: {} is a Mixture-of-Experts model that Hugging Face's Mixtral cannot hold: {} "
        "(such checkpoints serve, generate and score as they are)",
        dir.string(), gap);
  const param_layout L = make_layout(spec);
  const auto ck = load_checkpoint(head.dir, L);

  const bool llama = spec.arch == model_arch::llama;
  const std::string text = (moe     ? mixtral_config(spec)
                            : llama ? llama_config(spec)
                                    : gpt2_config(spec))
                               .dump(2) +
                           "\n";
  const fs::path parent = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const fs::path cj = parent / "config.json";
  const bool have_cj = fs::exists(cj);
  if (have_cj && read_text_file(cj) != text)
    fail("export: {} exists with other content; refusing to overwrite it", cj.string());
  fs::create_directories(parent);
  std::vector<out_tensor> owned;
  std::vector<st_write> w;
  if (llama) {
    owned = llama_tensors(spec, L, ck.params.data());
    for (auto& t : owned)
      w.push_back({t.name, "F32", t.shape, t.data.data(), t.data.size() * sizeof(float)});
  } else {
    for (auto& p : L.params)
      w.push_back({p.name, "F32", p.shape, ck.params.data() + p.offset, p.numel * sizeof(float)});
  }
  write_safetensors(file, w, {{"format", "pt"}});
  if (!have_cj) write_file_atomic(cj, text);
  return cj;
}

// GPT-2 keeps its own checks (one file, the config.json beside it, names with or without
// "transformer."); Llama goes through the Hugging Face loader of the folder.
fs::path import_safetensors(const fs::path& file, const fs::path& root) {
  const fs::path parent = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const fs::path cj = parent / "config.json";
  if (!fs::exists(cj))
    fail("import: {} is missing (the Hugging Face config.json must sit next to {})", cj.string(),
         file.string());
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(read_text_file(cj));
  } catch (const nlohmann::json::exception& e) {
    fail("import: {} is not valid JSON: {}", cj.string(), e.what());
  }
  if (!c.is_object()) fail("import: {} is not a JSON object", cj.string());
  const std::string type = c.value("model_type", std::string("gpt2"));
  if (type != "gpt2" && type != "llama" && type != "mixtral")
    fail("import: {}: model_type is {}, expected \"gpt2\", \"llama\" or \"mixtral\"", cj.string(),
         c["model_type"].dump());
  if (holds_checkpoints(root))
    fail("import: {} already holds checkpoints; refusing to import into it", root.string());
  hf_model m;
  try {
    m = load_hf_model(parent);
  } catch (const zf::error& e) {
    fail("import: {}", e.what());
  }
  run_config cfg;
  cfg.model = config_of(m.spec);
  cfg.train.seq_len = std::min(cfg.train.seq_len, cfg.model.n_positions);
  try {
    validate(cfg);
  } catch (const zf::error& e) {
    fail("import: {}: {}", cj.string(), e.what());
  }
  const param_layout L = make_layout(m.spec);
  checkpoint_view v;
  v.step = 0;
  v.config_toml = to_toml(cfg);
  v.layout = &L;
  v.params = m.flat.data();
  v.state = {{"imported_from", file.string()}};
  return save_checkpoint(root, v, 1);
}

}  // namespace zf::storage
