// load_hf_model: a Hugging Face model folder (config.json + *.safetensors) -> the model spec and
// its parameters in the canonical flat layout (runtime/model/layout.hpp).
//
// Two steps so that the fp32 buffer is allocated once: first every tensor the model needs is
// found and its shape checked (a plan of blocks, each one canonical tensor made of one or more
// source tensors), then the buffer is sized from the layout and each block converted into it.
#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/core/memory.hpp"
#include "runtime/model/lm_weights.hpp"
#include "storage/safetensors.hpp"

namespace zf {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using storage::safetensors_file;
using storage::st_tensor;

// Typed access to config.json with messages naming the file, the key, expected and found.
// scope prefixes the keys in messages for a nested object ("rope_scaling." + "factor").
struct config_reader {
  json j;
  std::string file;
  std::string scope;

  std::string name(const char* key) const { return scope + key; }
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  int pos_int(const char* key) const {
    if (!has(key)) fail("hf: {}: missing \"{}\" (a positive integer)", file, name(key));
    const auto& v = j[key];
    if (!v.is_number_integer() || v.get<long long>() <= 0 || v.get<long long>() > 1 << 30)
      fail("hf: {}: \"{}\" is {}, expected a positive integer", file, name(key), v.dump());
    return v.get<int>();
  }
  int pos_int_or(const char* key, int def) const { return has(key) ? pos_int(key) : def; }
  double pos_number(const char* key) const {
    if (!has(key)) fail("hf: {}: missing \"{}\" (a positive number)", file, name(key));
    return number_or(key, 0);
  }
  double number_or(const char* key, double def) const {
    if (!has(key)) return def;
    if (!j[key].is_number() || j[key].get<double>() <= 0)
      fail("hf: {}: \"{}\" is {}, expected a positive number", file, name(key), j[key].dump());
    return j[key].get<double>();
  }
  bool bool_or(const char* key, bool def) const {
    if (!has(key)) return def;
    if (!j[key].is_boolean())
      fail("hf: {}: \"{}\" is {}, expected true or false", file, name(key), j[key].dump());
    return j[key].get<bool>();
  }
  std::string string_or(const char* key, const char* def) const {
    if (!has(key)) return def;
    if (!j[key].is_string())
      fail("hf: {}: \"{}\" is {}, expected a string", file, name(key), j[key].dump());
    return j[key].get<std::string>();
  }
  // A token id, a list of ids (the first is used) or null/absent (-1).
  int token_id(const char* key) const {
    if (!has(key)) return -1;
    const json& v = j[key].is_array() && !j[key].empty() ? j[key][0] : j[key];
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > 1 << 30)
      fail("hf: {}: \"{}\" is {}, expected a token id or a list of them", file, name(key),
           j[key].dump());
    return v.get<int>();
  }
  void require(bool ok, const char* key, const char* expected) const {
    if (!ok)
      fail("hf: {}: \"{}\" is {}, only {} is supported", file, name(key),
           j.contains(key) ? j[key].dump() : "absent", expected);
  }
};

// config.json "rope_scaling": null or an object whose "rope_type" (before transformers 4.43:
// "type") is "default", "linear" (needs factor) or "llama3" (needs factor, low_freq_factor,
// high_freq_factor, original_max_position_embeddings), as modeling_rope_utils reads them.
// Other types (dynamic, yarn, longrope, ...) change the attention scale or depend on the
// sequence length and are refused, as are missing or malformed fields.
rope_scaling parse_rope_scaling(const config_reader& c) {
  rope_scaling s;
  if (!c.has("rope_scaling")) return s;
  if (!c.j["rope_scaling"].is_object())
    fail("hf: {}: \"rope_scaling\" is {}, expected an object or null", c.file,
         c.j["rope_scaling"].dump());
  const config_reader r{c.j["rope_scaling"], c.file, "rope_scaling."};
  if (r.has("rope_type") && r.has("type") && r.j["rope_type"] != r.j["type"])
    fail("hf: {}: \"rope_scaling.rope_type\" is {} but \"rope_scaling.type\" is {}", c.file,
         r.j["rope_type"].dump(), r.j["type"].dump());
  const char* key = r.has("rope_type") || !r.has("type") ? "rope_type" : "type";
  if (!r.has(key))
    fail("hf: {}: missing \"rope_scaling.rope_type\" (\"llama3\", \"linear\" or \"default\")",
         c.file);
  const std::string type = r.string_or(key, "");
  if (type == "default") return s;
  if (type == "linear") {
    s.type = rope_scaling::kind::linear;
    s.factor = r.pos_number("factor");
    return s;
  }
  r.require(type == "llama3", key, "\"llama3\", \"linear\" or \"default\"");
  s.type = rope_scaling::kind::llama3;
  s.factor = r.pos_number("factor");
  s.low_freq_factor = r.pos_number("low_freq_factor");
  s.high_freq_factor = r.pos_number("high_freq_factor");
  s.original_max_positions = r.pos_int("original_max_position_embeddings");
  // The blend divides by high - low: the bands must be in this order.
  if (s.high_freq_factor <= s.low_freq_factor)
    fail(
        "hf: {}: \"rope_scaling.high_freq_factor\" is {}, expected more than "
        "\"rope_scaling.low_freq_factor\" ({})",
        c.file, r.j["high_freq_factor"].dump(), r.j["low_freq_factor"].dump());
  return s;
}

// The model is loaded as one fp32 buffer: one that cannot fit is refused by config.json's sizes
// before the weights are opened, not by a std::bad_alloc (or an out-of-memory kill) after.
void check_fits_in_memory(const model_spec& s, const std::string& file) {
  const double n = count_params(s).total(), need = n * sizeof(float);
  const std::uint64_t have = machine_memory_bytes();
  if (need <= double(have)) return;
  const bool gpt2 = s.arch == model_arch::gpt2;
  fail(
      "hf: {}: {} = {}, {} = {}, {} = {}: the model has {:.3g} parameters, {} as fp32, but this "
      "machine has {}",
      file, "vocab_size", s.vocab_size, gpt2 ? "n_embd" : "hidden_size", s.hidden,
      gpt2 ? "n_layer" : "num_hidden_layers", s.n_layer, n, bytes_text(need),
      bytes_text(double(have)));
}

// attention_bias: Llama q/k/v/o biases (the spec's attn_bias).
// MixtralForCausalLM: every layer an MoE of num_local_experts SwiGLU experts of width
// intermediate_size, softmax router, top num_experts_per_tok renormalised, no capacity.
void parse_mixtral(const config_reader& c, model_spec& cfg) {
  const int E = c.pos_int("num_local_experts");
  cfg.moe.experts.assign(std::size_t(cfg.n_layer), E);
  cfg.moe.top_k = c.pos_int("num_experts_per_tok");
  // Mixtral renormalises even a single gate (to 1); norm_topk here applies from top_k 2.
  c.require(cfg.moe.top_k >= 2 && cfg.moe.top_k <= E, "num_experts_per_tok",
            "2 to num_local_experts");
  cfg.moe.expert_intermediate = cfg.intermediate;
  cfg.moe.dropless = true;
  cfg.moe.router = moe_router::softmax;
  cfg.moe.norm_topk = true;
  cfg.moe.aux_loss_coef = c.number_or("router_aux_loss_coef", 0.001);
  cfg.moe.z_loss_coef = 0;
  if (c.has("sliding_window")) {
    const int w = c.pos_int("sliding_window");
    c.require(w >= cfg.max_positions, "sliding_window",
              "null or at least max_position_embeddings (no sliding-window attention)");
  }
}

model_spec parse_config(const fs::path& dir, bool& attention_bias) {
  const fs::path path = dir / "config.json";
  config_reader c{{}, path.string(), ""};
  if (!fs::is_regular_file(path))
    fail("hf: {}: no config.json (expected a Hugging Face model folder)", c.file);
  try {
    std::ifstream in(path);
    c.j = json::parse(in);
  } catch (const json::exception& e) {
    fail("hf: {}: not valid JSON: {}", c.file, e.what());
  }
  if (!c.j.is_object()) fail("hf: {}: expected a JSON object", c.file);
  model_spec cfg;
  fs::path folder = dir.filename().empty() ? dir.parent_path() : dir;
  cfg.name = folder.filename().string();
  const std::string type = c.string_or("model_type", "");
  if (type == "gpt2") {
    cfg.arch = model_arch::gpt2;
    cfg.vocab_size = c.pos_int("vocab_size");
    cfg.hidden = c.pos_int("n_embd");
    cfg.n_layer = c.pos_int("n_layer");
    cfg.n_head = c.pos_int("n_head");
    cfg.max_positions = c.pos_int("n_positions");
    if (!c.has("n_inner") && cfg.hidden > INT_MAX / 4)  // the default 4 n_embd must be an int
      fail("hf: {}: \"n_embd\" is {}, expected at most {} (4 n_embd is the MLP width)", c.file,
           cfg.hidden, INT_MAX / 4);
    cfg.intermediate = c.pos_int_or("n_inner", 4 * cfg.hidden);
    cfg.norm_eps = float(c.number_or("layer_norm_epsilon", 1e-5));
    cfg.tied_head = c.bool_or("tie_word_embeddings", true);
    c.require(c.string_or("activation_function", "gelu_new") == "gelu_new", "activation_function",
              "\"gelu_new\"");
    c.require(c.bool_or("scale_attn_weights", true), "scale_attn_weights", "true");
    c.require(!c.bool_or("scale_attn_by_inverse_layer_idx", false),
              "scale_attn_by_inverse_layer_idx", "false");
    c.require(!c.bool_or("add_cross_attention", false), "add_cross_attention", "false");
    if (cfg.hidden % cfg.n_head)
      fail("hf: {}: n_embd {} is not a multiple of n_head {}", c.file, cfg.hidden, cfg.n_head);
    cfg.n_kv_head = cfg.n_head;
    cfg.head_dim = cfg.hidden / cfg.n_head;
  } else if (type == "llama" || type == "mixtral") {
    cfg.arch = model_arch::llama;
    cfg.vocab_size = c.pos_int("vocab_size");
    cfg.hidden = c.pos_int("hidden_size");
    cfg.n_layer = c.pos_int("num_hidden_layers");
    cfg.n_head = c.pos_int("num_attention_heads");
    cfg.n_kv_head = c.pos_int_or("num_key_value_heads", cfg.n_head);
    cfg.intermediate = c.pos_int("intermediate_size");
    cfg.max_positions = c.pos_int("max_position_embeddings");
    cfg.norm_eps = float(c.number_or("rms_norm_eps", 1e-6));
    cfg.rope_theta = float(c.number_or("rope_theta", 10000.0));
    cfg.tied_head = c.bool_or("tie_word_embeddings", false);
    cfg.rope = parse_rope_scaling(c);
    c.require(c.string_or("hidden_act", "silu") == "silu", "hidden_act", "\"silu\"");
    c.require(!c.bool_or("mlp_bias", false), "mlp_bias", "false");
    attention_bias = c.bool_or("attention_bias", false);
    if (cfg.n_head % cfg.n_kv_head)
      fail("hf: {}: num_attention_heads {} is not a multiple of num_key_value_heads {}", c.file,
           cfg.n_head, cfg.n_kv_head);
    if (!c.has("head_dim") && cfg.hidden % cfg.n_head)
      fail("hf: {}: hidden_size {} is not a multiple of num_attention_heads {}", c.file, cfg.hidden,
           cfg.n_head);
    cfg.head_dim = c.pos_int_or("head_dim", cfg.hidden / cfg.n_head);
    if (type == "mixtral") parse_mixtral(c, cfg);
  } else {
    fail("hf: {}: model_type {} is unsupported, expected \"gpt2\", \"llama\" or \"mixtral\"",
         c.file, c.j.contains("model_type") ? c.j["model_type"].dump() : "(absent)");
  }
  cfg.bos_id = c.token_id("bos_token_id");
  cfg.eos_id = c.token_id("eos_token_id");
  for (auto [key, id] : {std::pair{"bos_token_id", cfg.bos_id}, {"eos_token_id", cfg.eos_id}})
    if (id >= cfg.vocab_size)
      fail("hf: {}: \"{}\" is {}, outside the vocabulary of {} tokens", c.file, key, id,
           cfg.vocab_size);
  try {  // before the planner multiplies the sizes (q_dim(), ...) as ints
    check_spec(cfg);
  } catch (const error& e) {
    fail("hf: {}: {}", c.file, e.what());
  }
  check_fits_in_memory(cfg, c.file);
  return cfg;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A source tensor and where it lies in the destination block.
struct part {
  const safetensors_file* file;
  const st_tensor* t;
  bool transpose;  // nn.Linear [out, in] -> columns [col, col + out) of an [in, cols] block
};

// One destination tensor of `rows x cols` floats, filled from its parts in order: transposed
// parts side by side (fused q|k|v, gate|up), plain parts one after another (vectors, Conv1D).
struct block {
  std::string dst;  // canonical name (runtime/model/layout.hpp)
  std::size_t rows, cols;
  std::vector<part> parts;
};

class planner {
 public:
  planner(const fs::path& dir, bool llama) : dir_(dir) {
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    if (paths.empty())
      fail("hf: {}: no *.safetensors file (pytorch_model.bin is not supported)", dir.string());
    files_.reserve(paths.size());
    for (const auto& p : paths) {
      files_.push_back(safetensors_file::open(p));
      for (const auto& t : files_.back().tensors())
        if (auto [it, fresh] = index_.emplace(t.name, part{&files_.back(), &t, false}); !fresh)
          fail("hf: tensor '{}' is in both {} and {}", t.name, it->second.file->path().string(),
               p.string());
    }
    // Checkpoints saved from the bare model lack the "transformer." / "model." prefix.
    prefix_ = llama ? "model." : "transformer.";
    if (!index_.contains(prefix_ + (llama ? "embed_tokens.weight" : "wte.weight"))) prefix_ = "";
  }

  // zf::error naming a tensor of a layer at or beyond n_layer ("...layers.N." / "...h.N."):
  // config.json describes fewer layers than the weights hold, and loading would silently drop
  // the rest.
  void check_layers(int n_layer) const {
    for (const auto& [name, p] : index_) {
      for (const char* tag : {"layers.", "h."}) {
        const std::string t = std::string(".") + tag;
        std::size_t at = ("." + name).find(t);
        if (at == std::string::npos) continue;
        at += t.size() - 1;  // index into name of the digits
        std::size_t end = at;
        while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
        if (end == at || end >= name.size() || name[end] != '.') continue;
        const long layer = std::stol(name.substr(at, end - at));
        if (layer >= n_layer)
          fail(
              "hf: {}: tensor '{}' belongs to layer {}, but config.json says the model has {} "
              "layers",
              p.file->path().string(), name, layer, n_layer);
      }
    }
  }

  // The tensor `prefix + key` (lm_head.weight is never prefixed), its shape checked.
  part need(const std::string& key, std::vector<int64_t> shape, bool transpose = false) const {
    const std::string name = key.starts_with("lm_head.") ? key : prefix_ + key;
    auto it = index_.find(name);
    if (it == index_.end()) {
      std::string names;
      for (const auto& f : files_)
        names += (names.empty() ? "" : ", ") + f.path().filename().string();
      fail("hf: tensor '{}' not found in {} (files: {})", name, dir_.string(), names);
    }
    if (it->second.t->shape != shape)
      fail("hf: {} in {}: shape {}, expected {}", name, it->second.file->path().string(),
           shape_str(it->second.t->shape), shape_str(shape));
    part p = it->second;
    p.transpose = transpose;
    return p;
  }

 private:
  fs::path dir_;
  std::vector<safetensors_file> files_;  // reserved up front: parts point into it
  std::map<std::string, part> index_;
  std::string prefix_;
};

void fill(const block& b, float* dst) {
  std::size_t col = 0, off = 0;
  for (const part& p : b.parts) {
    const std::vector<float> v = p.file->to_f32(p.t->name);
    if (!p.transpose) {
      std::memcpy(dst + off, v.data(), v.size() * sizeof(float));
      off += v.size();
      continue;
    }
    const std::size_t out = std::size_t(p.t->shape[0]), in = b.rows;  // v: [out, in]
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) dst[i * b.cols + col + o] = v[o * in + i];
    col += out;
  }
}

using dims = std::vector<int64_t>;

void plan_gpt2(const planner& pl, const model_spec& c, std::vector<block>& plan) {
  const int64_t H = c.hidden, I = c.intermediate, Q = c.qkv_dim();
  // Canonical GPT-2 names are Hugging Face's (Conv1D weights are already [in, out]).
  auto vec = [&](const std::string& key, int64_t n) {
    plan.push_back({key, 1, std::size_t(n), {pl.need(key, {n})}});
  };
  auto mat = [&](const std::string& key, int64_t r, int64_t k) {
    plan.push_back({key, std::size_t(r), std::size_t(k), {pl.need(key, {r, k})}});
  };
  mat("wte.weight", c.vocab_size, H);
  mat("wpe.weight", c.max_positions, H);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    vec(p + "ln_1.weight", H);
    vec(p + "ln_1.bias", H);
    mat(p + "attn.c_attn.weight", H, Q);
    vec(p + "attn.c_attn.bias", Q);
    mat(p + "attn.c_proj.weight", H, H);
    vec(p + "attn.c_proj.bias", H);
    vec(p + "ln_2.weight", H);
    vec(p + "ln_2.bias", H);
    mat(p + "mlp.c_fc.weight", H, I);
    vec(p + "mlp.c_fc.bias", I);
    mat(p + "mlp.c_proj.weight", I, H);
    vec(p + "mlp.c_proj.bias", H);
  }
  vec("ln_f.weight", H);
  vec("ln_f.bias", H);
  if (!c.tied_head) mat("lm_head.weight", c.vocab_size, H);
}

// Mixtral's block_sparse_moe of layer l: gate.weight [E, H] -> mlp.router.weight [H, E]; expert
// e's w1 (gate) and w3 (up) [I, H] -> gate_up_proj [H, 2I], w2 [H, I] -> down_proj [I, H].
void plan_mixtral_moe(const planner& pl, const model_spec& c, int l, std::vector<block>& plan) {
  const int64_t H = c.hidden, I = c.moe.expert_intermediate, E = c.moe.experts_of(l);
  const std::string p = "layers." + std::to_string(l) + ".", src = p + "block_sparse_moe.";
  plan.push_back({p + "mlp.router.weight",
                  std::size_t(H),
                  std::size_t(E),
                  {pl.need(src + "gate.weight", {E, H}, true)}});
  for (int64_t e = 0; e < E; ++e) {
    const std::string from = src + "experts." + std::to_string(e) + ".",
                      to = p + "mlp.experts." + std::to_string(e) + ".";
    plan.push_back(
        {to + "gate_up_proj.weight",
         std::size_t(H),
         std::size_t(2 * I),
         {pl.need(from + "w1.weight", {I, H}, true), pl.need(from + "w3.weight", {I, H}, true)}});
    plan.push_back({to + "down_proj.weight",
                    std::size_t(I),
                    std::size_t(H),
                    {pl.need(from + "w2.weight", {H, I}, true)}});
  }
}

void plan_llama(const planner& pl, const model_spec& c, std::vector<block>& plan) {
  const int64_t H = c.hidden, I = c.intermediate, q = c.q_dim(), kv = c.kv_dim();
  auto vec = [&](const std::string& key, int64_t n) {
    plan.push_back({key, 1, std::size_t(n), {pl.need(key, {n})}});
  };
  plan.push_back({"embed_tokens.weight",
                  std::size_t(c.vocab_size),
                  std::size_t(H),
                  {pl.need("embed_tokens.weight", {c.vocab_size, H})}});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    vec(p + "input_layernorm.weight", H);
    // nn.Linear weights are [out, in]: transposed into fused [in, out] blocks.
    plan.push_back({p + "self_attn.qkv_proj.weight",
                    std::size_t(H),
                    std::size_t(q + 2 * kv),
                    {pl.need(p + "self_attn.q_proj.weight", {q, H}, true),
                     pl.need(p + "self_attn.k_proj.weight", {kv, H}, true),
                     pl.need(p + "self_attn.v_proj.weight", {kv, H}, true)}});
    plan.push_back({p + "self_attn.o_proj.weight",
                    std::size_t(q),
                    std::size_t(H),
                    {pl.need(p + "self_attn.o_proj.weight", {H, q}, true)}});
    vec(p + "post_attention_layernorm.weight", H);
    if (c.moe.experts_of(l)) {
      plan_mixtral_moe(pl, c, l, plan);
      continue;
    }
    plan.push_back({p + "mlp.gate_up_proj.weight",
                    std::size_t(H),
                    std::size_t(2 * I),
                    {pl.need(p + "mlp.gate_proj.weight", {I, H}, true),
                     pl.need(p + "mlp.up_proj.weight", {I, H}, true)}});
    plan.push_back({p + "mlp.down_proj.weight",
                    std::size_t(I),
                    std::size_t(H),
                    {pl.need(p + "mlp.down_proj.weight", {H, I}, true)}});
  }
  vec("norm.weight", H);
  if (!c.tied_head)
    plan.push_back({"lm_head.weight",
                    std::size_t(c.vocab_size),
                    std::size_t(H),
                    {pl.need("lm_head.weight", {c.vocab_size, H})}});
}

void plan_llama_bias(const planner& pl, const model_spec& c, std::vector<block>& plan) {
  const int64_t H = c.hidden, q = c.q_dim(), kv = c.kv_dim();
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".self_attn.";
    plan.push_back({p + "qkv_proj.bias",
                    1,
                    std::size_t(q + 2 * kv),
                    {pl.need(p + "q_proj.bias", {q}), pl.need(p + "k_proj.bias", {kv}),
                     pl.need(p + "v_proj.bias", {kv})}});
    plan.push_back({p + "o_proj.bias", 1, std::size_t(H), {pl.need(p + "o_proj.bias", {H})}});
  }
}

}  // namespace

hf_model load_hf_model(const std::filesystem::path& dir) {
  hf_model m;
  bool attention_bias = false;
  m.spec = parse_config(dir, attention_bias);
  m.spec.attn_bias = attention_bias;
  const bool llama = m.spec.arch == model_arch::llama;
  planner pl(dir, llama);
  pl.check_layers(m.spec.n_layer);
  std::vector<block> plan;
  if (llama) {
    plan_llama(pl, m.spec, plan);
    if (attention_bias) plan_llama_bias(pl, m.spec, plan);
  } else {
    plan_gpt2(pl, m.spec, plan);
  }
  const param_layout layout = make_layout(m.spec);
  m.flat.resize(layout.total);
  for (const block& b : plan) fill(b, m.flat.data() + layout.at(b.dst).offset);
  return m;
}

lm_weights load_hf_weights(const std::filesystem::path& dir) {
  hf_model m = load_hf_model(dir);
  return make_lm_weights(m.spec, std::move(m.flat));
}

}  // namespace zf
