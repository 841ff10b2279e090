#include "runtime/model/layout.hpp"

#include "runtime/core/error.hpp"

namespace zf {

const param_info* param_layout::find(const std::string& name) const {
  for (auto& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

const param_info& param_layout::at(const std::string& name) const {
  const param_info* p = find(name);
  if (!p) fail("unknown parameter '{}'", name);
  return *p;
}

int param_layout::region_of(const std::string& name) const {
  const std::size_t off = at(name).offset;
  for (std::size_t r = 0; r < regions.size(); ++r)
    if (off >= regions[r].begin && off < regions[r].end) return static_cast<int>(r);
  fail("parameter '{}' lies in no region", name);
}

namespace {

// Block tensor slots, in block_tensors order, and their names per architecture ("" = absent).
struct block_names {
  const char* slot[12];
};
constexpr block_names k_gpt2 = {{"ln_1.weight", "ln_1.bias", "attn.c_attn.weight",
                                 "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                                 "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                                 "mlp.c_proj.weight", "mlp.c_proj.bias"}};
constexpr block_names k_llama = {{"input_layernorm.weight", "", "self_attn.qkv_proj.weight",
                                  "self_attn.qkv_proj.bias", "self_attn.o_proj.weight",
                                  "self_attn.o_proj.bias", "post_attention_layernorm.weight", "",
                                  "mlp.gate_up_proj.weight", "", "mlp.down_proj.weight", ""}};

}  // namespace

// Tensors are added in the flat order; each block's 12 slots are looked up once here, so the
// hot paths only add offsets.
param_layout make_layout(const model_spec& s) {
  check_spec(s);
  param_layout L;
  const int64_t C = s.hidden, V = s.vocab_size, P = s.max_positions, I = s.intermediate;
  const int64_t Q = s.q_dim(), D = s.qkv_dim();
  const bool llama = s.arch == model_arch::llama;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    param_info p{std::move(name), std::move(shape), L.total, 1, false};
    for (auto d : p.shape) p.numel *= static_cast<std::size_t>(d);
    p.decay = p.shape.size() >= 2;
    L.total += p.numel;
    L.params.push_back(std::move(p));
    return L.params.back().offset;
  };
  L.globals_[0] = add(llama ? "embed_tokens.weight" : "wte.weight", {V, C});
  if (!llama) L.globals_[1] = add("wpe.weight", {P, C});
  L.regions.push_back({0, L.total});
  const block_names& names = llama ? k_llama : k_gpt2;
  const std::vector<int64_t> shapes[12] = {{C}, {C}, {C, D},          {D}, {Q, C}, {C},
                                           {C}, {C}, {C, s.up_dim()}, {I}, {I, C}, {C}};
  const bool bias = s.has_biases() || s.attn_bias;
  // An MoE block's router, then its experts, each the architecture's MLP slots (8..11) under
  // mlp.experts.{e}., at offsets relative to expert e's first float (layout.hpp).
  const std::vector<int64_t> expert_shapes[4] = {
      {C, s.expert_up_dim()}, {s.moe.expert_intermediate}, {s.moe.expert_intermediate, C}, {C}};
  auto add_experts = [&](param_layout::offsets& o, const std::string& prefix, int E) {
    o.router = add(prefix + "mlp.router.weight", {C, E});
    if (s.moe.router_bias()) o.router_b = add(prefix + "mlp.router.bias", {E});
    o.n_experts = E;
    const std::size_t mlp = std::string("mlp.").size();
    for (int e = 0; e < E; ++e) {
      const std::string ep = prefix + "mlp.experts." + std::to_string(e) + ".";
      const std::size_t first = L.total;
      if (e == 0) o.experts = first;
      for (int i = 0; i < 4; ++i) {
        const char* slot = names.slot[8 + i];
        if (!*slot) continue;
        const std::size_t off = add(ep + (slot + mlp), expert_shapes[i]);
        if (e == 0) o.e_off[i] = off - first;
      }
      if (e == 0) o.stride = L.total - first;
    }
  };
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string prefix = (llama ? "layers." : "h.") + std::to_string(l) + ".";
    param_layout::offsets o;
    const std::size_t begin = L.total;
    for (int i = 0; i < 12; ++i) {
      const bool attn_bias_slot = i == 3 || i == 5;
      const bool mlp_slot = i >= 8;
      const bool present =
          *names.slot[i] && (!llama || !attn_bias_slot || bias) && (!mlp_slot || s.dense_mlp(l));
      o.t[i] = present ? add(prefix + names.slot[i], shapes[i]) : param_layout::none;
    }
    if (const int E = s.moe.experts_of(l)) add_experts(o, prefix, E);
    L.blocks_.push_back(o);
    L.regions.push_back({begin, L.total});
  }
  const std::size_t final_begin = L.total;
  L.globals_[2] = add(llama ? "norm.weight" : "ln_f.weight", {C});
  if (!llama) L.globals_[3] = add("ln_f.bias", {C});
  if (!s.tied_head) L.globals_[4] = add("lm_head.weight", {V, C});
  if (s.value_head) L.globals_[5] = add("v_head.weight", {C});
  L.regions.push_back({final_begin, L.total});
  return L;
}

}  // namespace zf
