// GGUF <-> zeroflow GPT-2 models (gguf_model.hpp).
#include "storage/gguf_model.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/quant_linear.hpp"
#include "storage/gguf.hpp"
#include "storage/gguf_model_detail.hpp"

namespace zf::storage {
namespace fs = std::filesystem;
namespace k = zf::kernels;
using sz = std::size_t;
using namespace gguf_detail;

namespace {

// One of our 2-D or 1-D parameters as a GGUF tensor: its name there and whether our [a, b]
// (Conv1D [in, out]) matrix is written transposed (rows of outputs).
struct tensor_map {
  std::string ours, theirs;
  bool transpose = false;
};

std::vector<tensor_map> gpt2_names(const model_spec& s) {
  std::vector<tensor_map> out = {{"wte.weight", "token_embd.weight"},
                                 {"wpe.weight", "position_embd.weight"}};
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string h = fmt::format("h.{}.", l), b = fmt::format("blk.{}.", l);
    out.push_back({h + "ln_1.weight", b + "attn_norm.weight"});
    out.push_back({h + "ln_1.bias", b + "attn_norm.bias"});
    out.push_back({h + "attn.c_attn.weight", b + "attn_qkv.weight", true});
    out.push_back({h + "attn.c_attn.bias", b + "attn_qkv.bias"});
    out.push_back({h + "attn.c_proj.weight", b + "attn_output.weight", true});
    out.push_back({h + "attn.c_proj.bias", b + "attn_output.bias"});
    out.push_back({h + "ln_2.weight", b + "ffn_norm.weight"});
    out.push_back({h + "ln_2.bias", b + "ffn_norm.bias"});
    out.push_back({h + "mlp.c_fc.weight", b + "ffn_up.weight", true});
    out.push_back({h + "mlp.c_fc.bias", b + "ffn_up.bias"});
    out.push_back({h + "mlp.c_proj.weight", b + "ffn_down.weight", true});
    out.push_back({h + "mlp.c_proj.bias", b + "ffn_down.bias"});
  }
  out.push_back({"ln_f.weight", "output_norm.weight"});
  out.push_back({"ln_f.bias", "output_norm.bias"});
  out.push_back({s.tied_head ? "wte.weight" : "lm_head.weight", "output.weight"});
  return out;
}

}  // namespace

namespace gguf_detail {

uint32_t file_type(k::ggml_format f) {
  switch (f) {
    case k::ggml_format::f16:
      return 1;
    case k::ggml_format::q4_0:
      return 2;
    case k::ggml_format::q8_0:
      return 7;
    case k::ggml_format::bf16:
      return 32;
    case k::ggml_format::q4_K:
    case k::ggml_format::q6_K:
      fail(
          "export --format gguf: {} is read, not written (zeroflow's encoder for it is a plain "
          "one, less accurate than llama.cpp's; export f32 and run llama-quantize)",
          k::ggml_info(f).name);
    default:
      return 0;
  }
}

bool format_of(uint32_t ggml_type, k::ggml_format& out) {
  for (auto f :
       {k::ggml_format::f32, k::ggml_format::f16, k::ggml_format::bf16, k::ggml_format::q8_0,
        k::ggml_format::q4_0, k::ggml_format::q4_K, k::ggml_format::q6_K})
    if (uint32_t(k::ggml_info(f).ggml_type) == ggml_type) return out = f, true;
  return false;
}

std::string formats_text(const std::map<std::string, int>& counts) {
  std::string formats;
  for (const auto& [name, n] : counts)
    formats += fmt::format("{}{} x {}", formats.empty() ? "" : ", ", name, n);
  return formats;
}

}  // namespace gguf_detail

void write_gpt2_gguf(const lm_weights& w, const tokenizer& tok, const fs::path& file,
                     k::ggml_format type) {
  const model_spec& s = w.cfg;
  if (s.arch != model_arch::gpt2 || s.moe.any())
    fail("export --format gguf: only dense GPT-2 models are written so far ({} is {}{})", s.name,
         s.arch == model_arch::gpt2 ? "gpt2" : "llama", s.moe.any() ? " with MoE" : "");
  if (tok.vocab_size() > s.vocab_size)
    fail("export --format gguf: the tokenizer has {} tokens, the model's vocabulary {}",
         tok.vocab_size(), s.vocab_size);
  if (fs::exists(file)) fail("export: {} exists; refusing to overwrite it", file.string());
  std::vector<gguf_kv> md = {
      {"general.architecture", gguf_value::string("gpt2")},
      {"general.name", gguf_value::string(s.name.empty() ? "zeroflow" : s.name)},
      {"general.file_type", gguf_value::u32(file_type(type))},
      {"general.quantization_version", gguf_value::u32(2)},
      {"gpt2.context_length", gguf_value::u32(uint32_t(s.max_positions))},
      {"gpt2.embedding_length", gguf_value::u32(uint32_t(s.hidden))},
      {"gpt2.feed_forward_length", gguf_value::u32(uint32_t(s.intermediate))},
      {"gpt2.block_count", gguf_value::u32(uint32_t(s.n_layer))},
      {"gpt2.attention.head_count", gguf_value::u32(uint32_t(s.n_head))},
      {"gpt2.attention.layer_norm_epsilon", gguf_value::f32(float(s.norm_eps))}};
  const int eot = tok.eot() >= 0 ? tok.eot() : s.vocab_size - 1;
  write_tokenizer(tok, s.vocab_size, {eot, eot, false, false}, md, "export --format gguf");

  std::vector<std::vector<std::byte>> owned;  // each tensor's encoded bytes
  std::vector<gguf_write> tensors;
  std::vector<float> t;  // a transposed matrix
  for (const tensor_map& m : gpt2_names(s)) {
    const param_info& p = w.layout.at(m.ours);
    const float* src = w.store.data() + p.offset;
    if (p.shape.size() == 1) {  // norms and biases: F32
      owned.emplace_back(p.numel * sizeof(float));
      std::memcpy(owned.back().data(), src, p.numel * sizeof(float));
      tensors.push_back({m.theirs, 0, {uint64_t(p.numel)}, nullptr, p.numel * sizeof(float)});
      continue;
    }
    const int a = int(p.shape[0]), b = int(p.shape[1]);
    const int rows = m.transpose ? b : a, cols = m.transpose ? a : b;  // rows of cols inputs
    if (m.transpose) {
      t.resize(p.numel);
      for (int i = 0; i < a; ++i)
        for (int j = 0; j < b; ++j) t[sz(j) * a + i] = src[sz(i) * b + j];
      src = t.data();
    }
    if (k::ggml_block_size(type) > 1 && cols % k::ggml_block_size(type))
      fail("export --format gguf --type {}: {} has rows of {} values, not whole blocks of {}",
           k::ggml_info(type).name, m.ours, cols, k::ggml_block_size(type));
    const sz bytes = k::row_bytes(type, cols) * sz(rows);
    owned.emplace_back(bytes);
    k::ggml_quantize_rows(type, src, cols, rows, cols, owned.back().data());
    tensors.push_back({m.theirs,
                       uint32_t(k::ggml_info(type).ggml_type),
                       {uint64_t(cols), uint64_t(rows)},
                       nullptr,
                       bytes});
  }
  for (sz i = 0; i < tensors.size(); ++i) tensors[i].data = owned[i].data();
  write_gguf(file, md, tensors);
}

gguf_model read_gpt2_gguf(const fs::path& file, bool in_place) {
  auto owner = std::make_shared<gguf_file>(gguf_file::open(file));
  const gguf_file& g = *owner;
  const std::string where = file.string();
  if (g.get_string("general.architecture") != "gpt2")
    fail("{}: general.architecture is '{}'; only 'gpt2' is read so far", where,
         g.get_string("general.architecture"));
  model_config m;
  m.arch = "gpt2";
  m.n_layer = int(g.get_int("gpt2.block_count"));
  m.n_embd = int(g.get_int("gpt2.embedding_length"));
  m.n_head = int(g.get_int("gpt2.attention.head_count"));
  m.n_positions = int(g.get_int("gpt2.context_length"));
  m.intermediate = int(g.get_int("gpt2.feed_forward_length"));
  m.norm_eps = g.get_float("gpt2.attention.layer_norm_epsilon");
  const gguf_tensor& emb = g.at("token_embd.weight");
  if (emb.dims.size() != 2) fail("{}: token_embd.weight is not a matrix", where);
  m.vocab_size = int(emb.dims[1]);
  const gguf_tensor* out = g.find("output.weight");
  m.tied_head = !out || (out->type == emb.type && out->nbytes == emb.nbytes &&
                         std::memcmp(out->data, emb.data, emb.nbytes) == 0);
  const model_spec s = spec_of(m);
  const param_layout L = make_layout(s);
  fbuffer flat(L.total);
  auto q = std::make_shared<lm_quant>();  // in place: the projections and the head
  q->linears.resize(sz(4) * sz(s.n_layer));
  std::map<std::string, int> counts;  // format -> tensors
  std::vector<float> row;
  int next_linear = 0;  // gpt2_names lists qkv, o, up, down of each block in order
  for (const tensor_map& tm : gpt2_names(s)) {
    const bool head = tm.theirs == "output.weight";
    if (head && s.tied_head && !in_place) continue;
    const param_info& p = L.at(tm.ours);
    const gguf_tensor& t = head && !out ? emb : g.at(tm.theirs);
    k::ggml_format f{};
    if (!format_of(t.type, f))
      fail("{}: tensor {} has ggml type {}; f32, f16, bf16, q8_0 and q4_0 are read", where, t.name,
           t.type);
    // GGUF dims of our [a] or [a, b]: ne[0] is the row length (transposed for Conv1D weights).
    std::vector<uint64_t> want;
    if (p.shape.size() == 1)
      want = {uint64_t(p.shape[0])};
    else if (tm.transpose)
      want = {uint64_t(p.shape[0]), uint64_t(p.shape[1])};
    else
      want = {uint64_t(p.shape[1]), uint64_t(p.shape[0])};
    if (t.dims != want)
      fail("{}: tensor {} has dims [{}], the model's hyper-parameters make it [{}]", where, t.name,
           fmt::join(t.dims, ", "), fmt::join(want, ", "));
    ++counts[k::ggml_info(f).name];
    const int cols = int(want[0]), rows = want.size() > 1 ? int(want[1]) : 1;
    if (in_place && (tm.transpose || head)) {  // a linear: rows of outputs, read from the file
      quant_linear ql;
      ql.k = cols;
      ql.n = rows;
      ql.group = cols;
      ql.ggml = {f, rows, cols, t.data};
      if (head)
        q->head = std::make_unique<quant_linear>(std::move(ql));
      else
        q->linears[sz(next_linear++)] = std::move(ql);
      continue;
    }
    float* dst = flat.data() + p.offset;
    const auto* src = reinterpret_cast<const unsigned char*>(t.data);
    const sz rb = k::row_bytes(f, cols);
    row.resize(sz(cols));
    for (int r = 0; r < rows; ++r) {
      k::ggml_dequantize_row(f, src + sz(r) * rb, cols, row.data());
      if (!tm.transpose) {
        std::copy(row.begin(), row.end(), dst + sz(r) * cols);
      } else {  // row r holds output r's inputs: column r of our [in, out]
        for (int i = 0; i < cols; ++i) dst[sz(i) * rows + r] = row[sz(i)];
      }
    }
  }
  const std::string formats = formats_text(counts);
  token_ids ids;
  tokenizer tok = read_tokenizer(g, ids);
  if (tok.vocab_size() > s.vocab_size)
    fail("{}: {} tokens for a vocabulary of {}", where, tok.vocab_size(), s.vocab_size);
  lm_weights w = make_lm_weights(s, std::move(flat));
  if (in_place) {
    q->scheme = "gguf";
    q->method = formats;
    q->owner = owner;
    q->link();
    attach_quant(w, std::move(q));
  }
  return {std::move(w), std::move(tok), formats};
}

void write_gguf_model(const lm_weights& w, const tokenizer& tok, const fs::path& file,
                      k::ggml_format type) {
  if (w.cfg.arch == model_arch::llama)
    write_llama_gguf(w, tok, file, type);
  else
    write_gpt2_gguf(w, tok, file, type);
}

gguf_model read_gguf_model(const fs::path& file, bool in_place) {
  const std::string arch = gguf_file::open(file).get_string("general.architecture");
  if (arch == "llama") return read_llama_gguf(file, in_place);
  if (arch == "gpt2") return read_gpt2_gguf(file, in_place);
  fail("{}: general.architecture is '{}'; 'gpt2' and 'llama' are read", file.string(), arch);
}

}  // namespace zf::storage
