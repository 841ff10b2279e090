// GGUF <-> zeroflow Llama models (gguf_model.hpp), as llama.cpp's convert_hf_to_gguf.py writes
// them and llama.cpp reads them.
//
// Row orders. Our fused qkv_proj [C, Q+2KV] and gate_up_proj [C, 2I] are [in, out] with columns
// q | k | v and gate | up; the file has one tensor per part, one row per output. Our RoPE is
// Hugging Face's rotate-half (dimension i of a head pairs with i + d/2), ggml's "normal" RoPE
// pairs 2i with 2i + 1, so the converter permutes attn_q's and attn_k's rows per head
// (LlamaModel.permute: w.reshape(n_head, 2, d/2, in).swapaxes(1, 2).reshape(n_head * d, in),
// n_head = n_kv_head for K):
//   file row h*d + 2i + half  <-  our output h*d + half*d/2 + i   (i < d/2, half 0 or 1)
// (attn_q.bias / attn_k.bias likewise). Reading applies the inverse.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <map>
#include <numbers>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/quant_linear.hpp"
#include "storage/gguf.hpp"
#include "storage/gguf_model.hpp"
#include "storage/gguf_model_detail.hpp"

namespace zf::storage {
namespace fs = std::filesystem;
namespace k = zf::kernels;
using sz = std::size_t;
using namespace gguf_detail;

namespace {

// One GGUF tensor of a Llama model and where its values live in our layout.
//   rows: our [V, C] table (embedding, head) whose rows are the file's rows;
//   cols: our [in, out] matrix's columns [col0, col0 + n), each a file row of `in` values;
//   vec:  our vector's [col0, col0 + n) (norms, biases).
struct llama_map {
  enum class kind { rows, cols, vec };
  std::string theirs, ours;
  kind how = kind::vec;
  int col0 = 0, n = 0;
  int head_dim = 0;  // > 0: rows permuted to ggml's RoPE order in heads of head_dim
  int slot = -1;     // cols: the lm_quant linear it is (part of): 4 l + (0 qkv, 1 o, 2 up, 3 down)
};

// File row r of a permuted Q / K part -> our output (within the part), per the top of the file.
int unpermuted(int r, int head_dim) {
  if (head_dim == 0) return r;
  const int h = r / head_dim, j = r % head_dim;
  return h * head_dim + (j % 2) * (head_dim / 2) + j / 2;
}

std::vector<llama_map> llama_names(const model_spec& s) {
  using kd = llama_map::kind;
  const int C = s.hidden, Q = s.q_dim(), KV = s.kv_dim(), I = s.intermediate, d = s.head_dim;
  std::vector<llama_map> out = {{"token_embd.weight", "embed_tokens.weight", kd::rows}};
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string o = fmt::format("layers.{}.", l), b = fmt::format("blk.{}.", l);
    const std::string qkv = o + "self_attn.qkv_proj.", up = o + "mlp.gate_up_proj.weight";
    const int L = 4 * l;
    out.push_back({b + "attn_norm.weight", o + "input_layernorm.weight", kd::vec, 0, C});
    out.push_back({b + "attn_q.weight", qkv + "weight", kd::cols, 0, Q, d, L});
    out.push_back({b + "attn_k.weight", qkv + "weight", kd::cols, Q, KV, d, L});
    out.push_back({b + "attn_v.weight", qkv + "weight", kd::cols, Q + KV, KV, 0, L});
    if (s.attn_bias) {
      out.push_back({b + "attn_q.bias", qkv + "bias", kd::vec, 0, Q, d});
      out.push_back({b + "attn_k.bias", qkv + "bias", kd::vec, Q, KV, d});
      out.push_back({b + "attn_v.bias", qkv + "bias", kd::vec, Q + KV, KV});
    }
    out.push_back(
        {b + "attn_output.weight", o + "self_attn.o_proj.weight", kd::cols, 0, C, 0, L + 1});
    if (s.attn_bias)
      out.push_back({b + "attn_output.bias", o + "self_attn.o_proj.bias", kd::vec, 0, C});
    out.push_back({b + "ffn_norm.weight", o + "post_attention_layernorm.weight", kd::vec, 0, C});
    out.push_back({b + "ffn_gate.weight", up, kd::cols, 0, I, 0, L + 2});
    out.push_back({b + "ffn_up.weight", up, kd::cols, I, I, 0, L + 2});
    out.push_back({b + "ffn_down.weight", o + "mlp.down_proj.weight", kd::cols, 0, C, 0, L + 3});
  }
  out.push_back({"output_norm.weight", "norm.weight", kd::vec, 0, C});
  if (!s.tied_head) out.push_back({"output.weight", "lm_head.weight", kd::rows});
  return out;
}

// The GGUF dims of m: {row length, rows} or {n}.
std::vector<uint64_t> dims_of(const llama_map& m, const param_info& p) {
  switch (m.how) {
    case llama_map::kind::rows:
      return {uint64_t(p.shape[1]), uint64_t(p.shape[0])};
    case llama_map::kind::cols:
      return {uint64_t(p.shape[0]), uint64_t(m.n)};
    default:
      return {uint64_t(m.n)};
  }
}

// m's values in file order: rows [R, K] (R = 1 for a vector). src: our parameter.
void file_rows(const llama_map& m, const param_info& p, const float* src, std::vector<float>& out) {
  if (m.how == llama_map::kind::rows) {
    out.assign(src, src + p.numel);
    return;
  }
  const sz K = m.how == llama_map::kind::cols ? sz(p.shape[0]) : 1;
  const sz ld = m.how == llama_map::kind::cols ? sz(p.shape[1]) : 0;
  out.resize(K * sz(m.n));
  for (int r = 0; r < m.n; ++r) {
    const sz col = sz(m.col0 + unpermuted(r, m.head_dim));
    if (m.how == llama_map::kind::vec)
      out[sz(r)] = src[col];
    else
      for (sz i = 0; i < K; ++i) out[sz(r) * K + i] = src[i * ld + col];
  }
}

// llama.cpp's rope_freqs.weight for a llama3 rope scaling: [head_dim / 2] divisors of the
// frequencies, as convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors computes them (the
// base frequencies in float32, as torch does there).
std::vector<float> llama3_rope_factors(const model_spec& s) {
  const rope_scaling& r = s.rope;
  const double old_ctx = r.original_max_positions;
  const double low_wavelen = old_ctx / r.low_freq_factor,
               high_wavelen = old_ctx / r.high_freq_factor;
  std::vector<float> f;
  for (int i = 0; i < s.head_dim; i += 2) {
    const float freq = 1.0f / std::pow(s.rope_theta, float(i) / float(s.head_dim));
    const double wavelen = 2 * std::numbers::pi / double(freq);
    if (wavelen < high_wavelen) {
      f.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      f.push_back(float(r.factor));
    } else {
      const double smooth =
          (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      f.push_back(float(1 / ((1 - smooth) / r.factor + smooth)));
    }
  }
  return f;
}

std::vector<gguf_kv> llama_metadata(const model_spec& s, k::ggml_format type) {
  std::vector<gguf_kv> md = {
      {"general.architecture", gguf_value::string("llama")},
      {"general.name", gguf_value::string(s.name.empty() ? "zeroflow" : s.name)},
      {"general.file_type", gguf_value::u32(file_type(type))},
      {"general.quantization_version", gguf_value::u32(2)},
      {"llama.vocab_size", gguf_value::u32(uint32_t(s.vocab_size))},
      {"llama.context_length", gguf_value::u32(uint32_t(s.max_positions))},
      {"llama.embedding_length", gguf_value::u32(uint32_t(s.hidden))},
      {"llama.feed_forward_length", gguf_value::u32(uint32_t(s.intermediate))},
      {"llama.block_count", gguf_value::u32(uint32_t(s.n_layer))},
      {"llama.attention.head_count", gguf_value::u32(uint32_t(s.n_head))},
      {"llama.attention.head_count_kv", gguf_value::u32(uint32_t(s.n_kv_head))},
      {"llama.attention.layer_norm_rms_epsilon", gguf_value::f32(s.norm_eps)},
      {"llama.rope.freq_base", gguf_value::f32(s.rope_theta)},
      {"llama.rope.dimension_count", gguf_value::u32(uint32_t(s.head_dim))}};
  if (s.head_dim * s.n_head != s.hidden) {  // llama.cpp's n_embd_head_k / _v
    md.push_back({"llama.attention.key_length", gguf_value::u32(uint32_t(s.head_dim))});
    md.push_back({"llama.attention.value_length", gguf_value::u32(uint32_t(s.head_dim))});
  }
  if (s.rope.type == rope_scaling::kind::linear) {
    md.push_back({"llama.rope.scaling.type", gguf_value::string("linear")});
    md.push_back({"llama.rope.scaling.factor", gguf_value::f32(float(s.rope.factor))});
  }
  return md;
}

// Our special-token rule as GGUF's bos / eos ids and add_* flags.
token_ids llama_token_ids(const model_spec& s, const tokenizer& tok) {
  token_ids ids;
  const special_rule& r = tok.prompt_specials();
  if (r.prefix.size() > 1 || r.suffix.size() > 1)
    fail(
        "export --format gguf: the tokenizer adds {} token(s) before and {} after a prompt; GGUF's "
        "tokenizer.ggml.add_bos_token / add_eos_token say at most one each",
        r.prefix.size(), r.suffix.size());
  ids.add_bos = r.prefix.size() == 1;
  ids.bos = ids.add_bos ? r.prefix[0] : s.bos_id >= 0 ? s.bos_id : tok.bos_token_id();
  ids.eos = s.eos_id >= 0 ? s.eos_id : tok.eos_token_id() >= 0 ? tok.eos_token_id() : tok.eot();
  if (r.suffix.size() == 1 && r.suffix[0] != ids.eos)
    fail(
        "export --format gguf: the tokenizer appends token {} to a prompt but the model's eos is "
        "{}; GGUF's tokenizer.ggml.add_eos_token can only append eos",
        r.suffix[0], ids.eos);
  ids.add_eos = r.suffix.size() == 1;
  return ids;
}

}  // namespace

void write_llama_gguf(const lm_weights& w, const tokenizer& tok, const fs::path& file,
                      k::ggml_format type) {
  const model_spec& s = w.cfg;
  if (s.arch != model_arch::llama || s.moe.any() || s.value_head)
    fail("export --format gguf: write_llama_gguf writes dense Llama models ({} is {}{}{})", s.name,
         arch_name(s.arch), s.moe.any() ? " with MoE" : "",
         s.value_head ? " with a value head" : "");
  if (tok.vocab_size() > s.vocab_size)
    fail("export --format gguf: the tokenizer has {} tokens, the model's vocabulary {}",
         tok.vocab_size(), s.vocab_size);
  if (fs::exists(file)) fail("export: {} exists; refusing to overwrite it", file.string());
  std::vector<gguf_kv> md = llama_metadata(s, type);
  write_tokenizer(tok, s.vocab_size, llama_token_ids(s, tok), md, "export --format gguf");

  std::vector<std::vector<std::byte>> owned;  // each tensor's encoded bytes
  std::vector<gguf_write> tensors;
  auto add_f32 = [&](const std::string& name, const std::vector<float>& v) {
    owned.emplace_back(v.size() * sizeof(float));
    std::memcpy(owned.back().data(), v.data(), owned.back().size());
    tensors.push_back({name, 0, {uint64_t(v.size())}, nullptr, owned.back().size()});
  };
  if (s.rope.type == rope_scaling::kind::llama3)
    add_f32("rope_freqs.weight", llama3_rope_factors(s));
  std::vector<float> rows;
  for (const llama_map& m : llama_names(s)) {
    const param_info& p = w.layout.at(m.ours);
    file_rows(m, p, w.store.data() + p.offset, rows);
    const std::vector<uint64_t> dims = dims_of(m, p);
    if (dims.size() == 1) {  // norms and biases: F32
      add_f32(m.theirs, rows);
      continue;
    }
    const int K = int(dims[0]), R = int(dims[1]);
    if (k::ggml_block_size(type) > 1 && K % k::ggml_block_size(type))
      fail("export --format gguf --type {}: {} ({}) has rows of {} values, not whole blocks of {}",
           k::ggml_info(type).name, m.theirs, m.ours, K, k::ggml_block_size(type));
    const sz bytes = k::row_bytes(type, K) * sz(R);
    owned.emplace_back(bytes);
    k::ggml_quantize_rows(type, rows.data(), K, R, K, owned.back().data());
    tensors.push_back({m.theirs, uint32_t(k::ggml_info(type).ggml_type), dims, nullptr, bytes});
  }
  for (sz i = 0; i < tensors.size(); ++i) tensors[i].data = owned[i].data();
  write_gguf(file, md, tensors);
}

namespace {

// rope_freqs.weight ([head_dim / 2] F32 divisors of the frequencies) as our llama3 scaling: the
// factor is the last (lowest frequency) one; low_freq_factor 1 and high_freq_factor 4 are
// assumed (convert_hf_to_gguf.py's defaults, Llama 3.1's and 3.2's values) and the original
// context solved from a blended frequency (or, with none, from the first fully scaled one). The
// factors are then recomputed from the fit and must match; other factors are refused.
void read_rope_factors(const gguf_file& g, const gguf_tensor& t, model_config& m) {
  const std::string where = g.path().string();
  const int d = m.head_dim ? m.head_dim : m.n_embd / m.n_head, half = d / 2;
  if (t.type != ggml_types::F32 || t.dims != std::vector<uint64_t>{uint64_t(half)})
    fail("{}: tensor rope_freqs.weight has ggml type {} and dims [{}]; F32 [{}] is read", where,
         t.type, fmt::join(t.dims, ", "), half);
  std::vector<float> f(sz(half), 1.0f);
  std::memcpy(f.data(), t.data, f.size() * sizeof(float));
  const double factor = f.back();
  if (factor == 1.0) return;  // no scaling
  double orig = 0;
  for (int i = 0; i < half && orig == 0; ++i) {
    const double wavelen = 2 * std::numbers::pi * std::pow(m.rope_theta, 2.0 * i / d);
    if (f[sz(i)] != 1.0f && double(f[sz(i)]) != factor) {  // blended: 1/f = (1-s)/factor + s
      const double smooth = (1 / double(f[sz(i)]) - 1 / factor) / (1 - 1 / factor);
      orig = std::round(wavelen * (1 + 3 * smooth));
    } else if (double(f[sz(i)]) == factor) {  // orig / low < wavelen: below it
      orig = std::ceil(wavelen) - 1;
    }
  }
  m.rope_type = "llama3";
  m.rope_factor = factor;
  m.rope_low_freq_factor = 1;
  m.rope_high_freq_factor = 4;
  m.rope_original_max_positions = int(orig);
  const std::vector<float> want = llama3_rope_factors(spec_of(m));
  for (int i = 0; i < half; ++i)
    if (std::abs(want[sz(i)] - f[sz(i)]) > 1e-4f * f[sz(i)])
      fail(
          "{}: tensor rope_freqs.weight holds factors ({}) that are no llama3 rope scaling with "
          "low_freq_factor 1 and high_freq_factor 4; other frequency factors are not read",
          where, fmt::join(f, ", "));
}

// The hyper-parameters of a Llama GGUF as a run configuration's model keys.
model_config llama_config(const gguf_file& g) {
  const std::string where = g.path().string();
  model_config m;
  m.arch = "llama";
  m.n_layer = int(g.get_int("llama.block_count"));
  m.n_embd = int(g.get_int("llama.embedding_length"));
  m.n_head = int(g.get_int("llama.attention.head_count"));
  m.n_kv_head = g.has("llama.attention.head_count_kv")
                    ? int(g.get_int("llama.attention.head_count_kv"))
                    : m.n_head;
  m.n_positions = int(g.get_int("llama.context_length"));
  m.intermediate = int(g.get_int("llama.feed_forward_length"));
  m.norm_eps = g.get_float("llama.attention.layer_norm_rms_epsilon");
  if (g.has("llama.rope.freq_base")) m.rope_theta = g.get_float("llama.rope.freq_base");
  if (g.has("llama.expert_count") && g.get_int("llama.expert_count") > 0)
    fail("{}: llama.expert_count is {}; Mixture-of-Experts (Mixtral) GGUF files are not read",
         where, g.get_int("llama.expert_count"));
  if (g.has("llama.attention.key_length"))
    m.head_dim = int(g.get_int("llama.attention.key_length"));
  const int d = m.head_dim ? m.head_dim : (m.n_head > 0 ? m.n_embd / m.n_head : 0);
  if (g.has("llama.attention.value_length") && g.get_int("llama.attention.value_length") != d)
    fail("{}: llama.attention.value_length is {}, key_length {}; one head size is read", where,
         g.get_int("llama.attention.value_length"), d);
  if (g.has("llama.rope.dimension_count") && g.get_int("llama.rope.dimension_count") != d)
    fail("{}: llama.rope.dimension_count is {}, the head size {}; partial RoPE is not read", where,
         g.get_int("llama.rope.dimension_count"), d);
  const std::string scaling =
      g.has("llama.rope.scaling.type") ? g.get_string("llama.rope.scaling.type") : "none";
  if (scaling == "linear") {
    m.rope_type = "linear";
    m.rope_factor = g.get_float("llama.rope.scaling.factor");
  } else if (scaling != "none") {
    fail("{}: llama.rope.scaling.type is '{}'; none and linear are read", where, scaling);
  } else if (g.has("llama.rope.scale_linear")) {  // older files' linear scaling
    m.rope_type = "linear";
    m.rope_factor = g.get_float("llama.rope.scale_linear");
  }
  if (const gguf_tensor* rf = g.find("rope_freqs.weight")) read_rope_factors(g, *rf, m);
  const gguf_tensor& emb = g.at("token_embd.weight");
  if (emb.dims.size() != 2) fail("{}: token_embd.weight is not a matrix", where);
  m.vocab_size = int(emb.dims[1]);
  const gguf_tensor* out = g.find("output.weight");
  m.tied_head = !out || (out->type == emb.type && out->nbytes == emb.nbytes &&
                         std::memcmp(out->data, emb.data, emb.nbytes) == 0);
  m.attn_bias = g.find("blk.0.attn_q.bias") != nullptr;
  return m;
}

// Decodes file tensor t (rows of K in format f) into our parameter at dst, undoing m's layout.
void dequantize_into(const gguf_tensor& t, k::ggml_format f, const llama_map& m,
                     const param_info& p, float* dst) {
  const int K = int(t.dims[0]), R = t.dims.size() > 1 ? int(t.dims[1]) : 1;
  const auto* src = reinterpret_cast<const unsigned char*>(t.data);
  const sz rb = k::row_bytes(f, K), ld = p.shape.size() > 1 ? sz(p.shape[1]) : 0;
  std::vector<float> row(static_cast<sz>(K));
  for (int r = 0; r < R; ++r) {
    k::ggml_dequantize_row(f, src + sz(r) * rb, K, row.data());
    if (m.how == llama_map::kind::rows)
      std::copy(row.begin(), row.end(), dst + sz(r) * sz(K));
    else if (m.how == llama_map::kind::vec)
      for (int j = 0; j < K; ++j) dst[sz(m.col0 + unpermuted(j, m.head_dim))] = row[sz(j)];
    else
      for (int i = 0; i < K; ++i)
        dst[sz(i) * ld + sz(m.col0 + unpermuted(r, m.head_dim))] = row[sz(i)];
  }
}

// A file tensor that is (part of) one of our linears, kept for the in-place assembly.
struct linear_part {
  const llama_map* m;
  const gguf_tensor* t;
  k::ggml_format f;
};

// One linear read in place from its file tensors: a single tensor is used where it lies in the
// mapping; the parts of a fused q|k|v or gate|up are copied, whole encoded rows in our output
// order (Q / K rows un-permuted), into one buffer o owns: ggml rows are independent, so this is
// lossless. Parts in different formats are decoded into f32 rows instead (exact: every decoded
// value is an fp32 number).
quant_linear assemble(const std::vector<linear_part>& parts, in_place_owner& o) {
  const int K = int(parts[0].t->dims[0]);
  int rows = 0;
  k::ggml_format f = parts[0].f;
  for (const linear_part& p : parts) {
    if (p.f != f) f = k::ggml_format::f32;
    rows += int(p.t->dims[1]);
  }
  const void* data = parts[0].t->data;
  if (parts.size() > 1) {
    const sz rb = k::row_bytes(f, K);
    auto& buf = o.fused.emplace_back(rb * sz(rows));
    for (const linear_part& p : parts) {
      const sz from = k::row_bytes(p.f, K);
      for (int r = 0; r < int(p.t->dims[1]); ++r) {
        std::byte* dst = buf.data() + sz(p.m->col0 + unpermuted(r, p.m->head_dim)) * rb;
        if (p.f == f)
          std::memcpy(dst, p.t->data + sz(r) * rb, rb);
        else
          k::ggml_dequantize_row(p.f, p.t->data + sz(r) * from, K, reinterpret_cast<float*>(dst));
      }
    }
    data = buf.data();
  }
  quant_linear ql;
  ql.k = K;
  ql.n = rows;
  ql.group = K;
  ql.ggml = {f, rows, K, data};
  return ql;
}

}  // namespace

gguf_model read_llama_gguf(const fs::path& file, bool in_place) {
  auto owner = std::make_shared<in_place_owner>();
  owner->file = std::make_shared<gguf_file>(gguf_file::open(file));
  const gguf_file& g = *owner->file;
  const std::string where = file.string();
  if (g.get_string("general.architecture") != "llama")
    fail("{}: general.architecture is '{}'; read_llama_gguf reads 'llama'", where,
         g.get_string("general.architecture"));
  token_ids ids;
  tokenizer tok = read_tokenizer(g, ids);
  model_spec s = spec_of(llama_config(g));
  s.bos_id = ids.bos;
  s.eos_id = ids.eos;
  if (tok.vocab_size() > s.vocab_size)
    fail("{}: {} tokens for a vocabulary of {}", where, tok.vocab_size(), s.vocab_size);
  const param_layout L = make_layout(s);
  fbuffer flat(L.total);
  std::map<std::string, int> counts;                                   // format -> tensors
  std::vector<std::vector<linear_part>> parts(sz(4) * sz(s.n_layer));  // in place
  const std::vector<llama_map> names = llama_names(s);                 // parts point into it
  for (const llama_map& tm : names) {
    const param_info& p = L.at(tm.ours);
    const gguf_tensor& t = g.at(tm.theirs);
    k::ggml_format f{};
    if (!format_of(t.type, f))
      fail("{}: tensor {} has ggml type {}; f32, f16, bf16, q8_0 and q4_0 are read", where, t.name,
           t.type);
    const std::vector<uint64_t> want = dims_of(tm, p);
    if (t.dims != want)
      fail("{}: tensor {} has dims [{}], the model's hyper-parameters make it [{}]", where, t.name,
           fmt::join(t.dims, ", "), fmt::join(want, ", "));
    ++counts[k::ggml_info(f).name];
    if (in_place && tm.slot >= 0) {
      parts[sz(tm.slot)].push_back({&tm, &t, f});
    } else if (!(in_place && tm.theirs == "output.weight")) {  // in place: the head stays there
      dequantize_into(t, f, tm, p, flat.data() + p.offset);
    }
  }
  const std::string formats = formats_text(counts);
  if (!in_place) return {make_lm_weights(s, std::move(flat)), std::move(tok), formats};

  auto q = std::make_shared<lm_quant>();
  q->linears.resize(parts.size());
  for (sz i = 0; i < parts.size(); ++i) q->linears[i] = assemble(parts[i], *owner);
  const gguf_tensor& head = s.tied_head ? g.at("token_embd.weight") : g.at("output.weight");
  k::ggml_format hf{};
  format_of(head.type, hf);
  const int hk = int(head.dims[0]), hn = int(head.dims[1]);
  q->head = std::make_unique<quant_linear>();
  q->head->k = hk;
  q->head->n = hn;
  q->head->group = hk;
  q->head->ggml = {hf, hn, hk, head.data};
  lm_weights w = make_lm_weights(s, std::move(flat));
  q->scheme = "gguf";
  q->method = formats;
  q->owner = owner;
  q->link();
  attach_quant(w, std::move(q));
  return {std::move(w), std::move(tok), formats};
}

}  // namespace zf::storage
