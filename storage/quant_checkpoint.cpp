// Quantized checkpoints: writing and reading (quant_checkpoint.hpp).
#include "storage/quant_checkpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

#include "kernels/quant.hpp"
#include "runtime/core/error.hpp"
#include "storage/checkpoint_format.hpp"
#include "storage/fs_util.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
using namespace detail;
namespace {

constexpr const char* k_quant_file = "quant-00000.bin";
constexpr const char* k_head = "lm_head.weight";
constexpr std::size_t k_part_align = 64;  // each part starts on a cache line

// One stored part of a quantized linear, as bytes.
struct part_bytes {
  int kind;
  zf::dtype type;
  const void* data;
  std::size_t bytes;
};

std::vector<part_bytes> parts_of(const quant_linear& q) {
  std::vector<part_bytes> out = {
      {kind_qdata, dtype::u8, q.data.data(), q.data.size()},
      {kind_qscales, dtype::f32, q.scales.data(), q.scales.size() * sizeof(float)}};
  if (q.asym) out.push_back({kind_qzeros, dtype::u8, q.zeros.data(), q.zeros.size()});
  if (q.rank > 0) {
    out.push_back({kind_lorc_a, dtype::f32, q.lorc_a.data(), q.lorc_a.size() * sizeof(float)});
    out.push_back({kind_lorc_b, dtype::f32, q.lorc_b.data(), q.lorc_b.size() * sizeof(float)});
  }
  return out;
}

quant_entry entry_of(const quant_linear& q) {
  return {kernels::qinfo(q.fmt).name, q.k, q.n, q.group, q.rank, q.asym, q.act_int8};
}

// Reads the fragments of one kind of tensor t, which must cover part.elems elements of
// part.type contiguously, into dst.
void read_part(const checkpoint_manifest& m, const tensor_entry& t, const stored_part& part,
               void* dst) {
  const std::string mp = manifest_path(m.dir).string();
  const std::size_t es = size_of(part.type);
  uint64_t covered = 0;
  for (auto& f : t.fragments) {  // sorted by kind, then elem_begin
    if (f.kind != part.kind) continue;
    if (f.dtype != part.type)
      fail("checkpoint {}: {} of '{}' is stored as {}, expected {}", m.dir.string(),
           kind_name(part.kind), t.name, dtype_name(f.dtype), dtype_name(part.type));
    if (f.elem_begin != covered || f.length % es || f.length / es > part.elems - covered)
      fail("corrupt checkpoint manifest {}: the {} fragments of '{}' do not tile its {} elements",
           mp, kind_name(part.kind), t.name, part.elems);
    read_fragment_bytes(m, f, static_cast<std::byte*>(dst) + f.elem_begin * es);
    covered += f.length / es;
  }
  if (covered != part.elems)
    fail("corrupt checkpoint manifest {}: {} of '{}' covers {} of its {} elements", mp,
         kind_name(part.kind), t.name, covered, part.elems);
}

quant_linear read_linear(const checkpoint_manifest& m, const tensor_entry& t) {
  const quant_entry& e = t.quant;
  const bool none[3] = {false, false, false};
  const auto parts =
      stored_parts(&e, t.shape, none, fmt::format("checkpoint {}: '{}'", m.dir.string(), t.name));
  quant_linear q;
  kernels::parse_qformat(e.format, q.fmt);  // stored_parts checked the name
  q.k = e.k;
  q.n = e.n;
  q.group = e.group;
  q.asym = e.asym;
  q.act_int8 = e.act_int8;
  q.rank = e.rank;
  auto sized = [](auto& v, uint64_t n) {
    v.resize(n);
    return static_cast<void*>(v.data());
  };
  for (auto& p : parts) {
    void* dst = p.kind == kind_qdata     ? sized(q.data, p.elems)
                : p.kind == kind_qscales ? sized(q.scales, p.elems)
                : p.kind == kind_qzeros  ? sized(q.zeros, p.elems)
                : p.kind == kind_lorc_a  ? sized(q.lorc_a, p.elems)
                                         : sized(q.lorc_b, p.elems);
    read_part(m, t, p, dst);
  }
  return q;
}

}  // namespace

std::vector<std::string> quant_tensor_names(const model_spec& spec) {
  const bool llama = spec.arch == model_arch::llama;
  std::vector<std::string> out;
  for (int l = 0; l < spec.n_layer; ++l) {
    if (llama)
      for (const char* p :
           {"self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"})
        out.push_back(fmt::format("layers.{}.{}.weight", l, p));
    else
      for (const char* p : {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"})
        out.push_back(fmt::format("h.{}.{}.weight", l, p));
  }
  out.push_back(k_head);
  return out;
}

fs::path save_quantized_checkpoint(const fs::path& root, int step, const std::string& config_toml,
                                   const nlohmann::json& state, const lm_weights& w) {
  if (!w.quant) fail("save_quantized_checkpoint: the weights are not quantized");
  if (has_checkpoint(root))
    fail("{} already holds checkpoints; write a quantized model into a new folder", root.string());
  const lm_quant& q = *w.quant;
  if (!q.expert_linears.empty() || w.cfg.moe.any())
    fail("save_quantized_checkpoint: Mixture-of-Experts models are not saved quantized");
  const param_layout& L = w.layout;
  const auto names = quant_tensor_names(w.cfg);
  std::vector<std::pair<const quant_linear*, std::string>> mats;
  for (std::size_t i = 0; i < q.linears.size(); ++i) mats.emplace_back(&q.linears[i], names[i]);
  if (q.head) mats.emplace_back(q.head.get(), k_head);

  manifest_info info{step, 1, 0, config_toml, state, q.scheme, q.method, {}};
  std::set<std::string> quantized;
  for (auto& [ql, name] : mats) {
    const param_info* p = L.find(name);
    std::vector<int64_t> shape = p ? p->shape : std::vector<int64_t>{ql->n, ql->k};
    info.quant.push_back({name, shape, entry_of(*ql)});
    quantized.insert(name);
  }
  // the float tensors, as runs of contiguous layout tensors
  std::vector<const param_info*> ps;
  for (auto& p : L.params) ps.push_back(&p);
  std::sort(ps.begin(), ps.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  std::vector<shard_data> slices;
  for (auto* p : ps) {
    if (quantized.count(p->name) || p->numel == 0) continue;
    if (!slices.empty() && slices.back().end == p->offset)
      slices.back().end += p->numel;
    else
      slices.push_back({p->offset, p->offset + p->numel, w.store.data() + p->offset});
  }

  const fs::path tmp = begin_checkpoint(root, step);
  try {
    std::vector<fragment> frags = write_shard(tmp, 0, L, slices);
    std::vector<std::byte> buf;
    for (auto& [ql, name] : mats)
      for (auto& part : parts_of(*ql)) {
        const std::size_t at = round_up(buf.size(), k_part_align);
        buf.resize(at + part.bytes);
        if (part.bytes) std::memcpy(buf.data() + at, part.data, part.bytes);
        frags.push_back({name, part.kind, k_quant_file, at, part.bytes, 0,
                         crc32_of(part.data, part.bytes), part.type});
      }
    write_file_atomic(tmp / k_quant_file, buf.data(), buf.size());
    return commit_checkpoint(root, tmp, L, frags, info, 1);
  } catch (const error&) {
    abandon_checkpoint(tmp);
    throw;
  }
}

lm_weights load_quantized_weights(const checkpoint_manifest& m, const model_spec& spec,
                                  const std::string& name) {
  const std::string mp = manifest_path(m.dir).string();
  const param_layout L = make_layout(spec);
  const auto names = quant_tensor_names(spec);
  fbuffer flat(L.total);
  const bool none[3] = {false, false, false};
  for (auto& p : L.params) {
    const tensor_entry* t = m.find(p.name);
    if (!t)
      fail("checkpoint {} has no tensor '{}' (the model expects F32[{}])", m.dir.string(), p.name,
           shape_str(p.shape));
    if (!t->quant.empty()) continue;  // read below, from its quantized parts
    if (t->shape != p.shape)
      fail("checkpoint {}: tensor '{}' is {}[{}], the model expects F32[{}]", m.dir.string(),
           p.name, t->dtype, shape_str(t->shape), shape_str(p.shape));
    read_part(m, *t, stored_parts(nullptr, p.shape, none, p.name)[0], flat.data() + p.offset);
  }
  auto q = std::make_shared<lm_quant>();
  q->scheme = m.quant_scheme;
  q->method = m.quant_method;
  q->linears.resize(names.size() - 1);
  for (std::size_t i = 0; i + 1 < names.size(); ++i) {
    const tensor_entry* t = m.find(names[i]);
    if (!t || t->quant.empty())
      fail("quantized checkpoint {} ({}) has no quantized '{}'", m.dir.string(), m.quant_scheme,
           names[i]);
    q->linears[i] = read_linear(m, *t);
  }
  if (const tensor_entry* t = m.find(k_head); t && !t->quant.empty())
    q->head = std::make_unique<quant_linear>(read_linear(m, *t));
  q->link();
  lm_weights w = make_lm_weights(spec, std::move(flat));
  w.cfg.name = name;
  attach_quant(w, std::move(q));  // checks every matrix's k and n against the spec
  return w;
}

}  // namespace zf::storage
