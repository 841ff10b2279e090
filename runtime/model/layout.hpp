#pragma once
// The one weight layout: every tensor of a model spec addressed by name in one flat fp32
// buffer. Optimizer shards, checkpoints, safetensors export, the training model and the serving
// forward all address the same bytes by name and offset; nothing computes `2 + 12*l`.
// Canonical names and orientation (matrices are [in, out], y = x @ W, so one GEMM per fused
// projection in every mode):
//   gpt2:  wte.weight [V,C], wpe.weight [P,C], h.{l}.ln_1.{weight,bias},
//          h.{l}.attn.c_attn.{weight [C,3C],bias}, h.{l}.attn.c_proj.{weight [C,C],bias},
//          h.{l}.ln_2.{weight,bias}, h.{l}.mlp.c_fc.{weight [C,I],bias},
//          h.{l}.mlp.c_proj.{weight [I,C],bias}, ln_f.{weight,bias}, lm_head.weight [V,C] if
//          untied (Hugging Face GPT-2 names, Conv1D orientation).
//   llama: embed_tokens.weight [V,C], layers.{l}.input_layernorm.weight,
//          layers.{l}.self_attn.qkv_proj.weight [C, Q+2KV] (columns q | k | v),
//          layers.{l}.self_attn.qkv_proj.bias and o_proj.bias if attn_bias,
//          layers.{l}.self_attn.o_proj.weight [Q,C], layers.{l}.post_attention_layernorm.weight,
//          layers.{l}.mlp.gate_up_proj.weight [C, 2I] (columns gate | up),
//          layers.{l}.mlp.down_proj.weight [I,C], norm.weight, lm_head.weight [V,C] if untied.
//   both:  v_head.weight [C] last, with a value head (reward models, critics).
//   MoE blocks (docs/moe.md): the dense MLP slots only with model.moe.residual (PR-MoE), then
//          {prefix}mlp.router.weight [C,E] (then mlp.router.bias [E] with
//          model.moe.bias_update_rate > 0: moved by the step's loads, never by AdamW) and, per
//          expert e, {prefix}mlp.experts.{e}. + the
//          architecture's MLP names (c_fc.weight [C,Ie], c_fc.bias, c_proj.weight [Ie,C],
//          c_proj.bias | gate_up_proj.weight [C,2Ie], down_proj.weight [Ie,C]): the experts last
//          in the block, contiguous and equally strided, so a rank's share of them is one range.
// Regions: contiguous ranges that forward and backward touch one at a time, in this order:
// 0 = embeddings, 1..L = block l-1, L+1 = final norm (+ untied head). ZeRO partitions each
// region across ranks, gathers a region just before use (stage 3) and reduce-scatters its
// gradients as soon as backward is done with it (stages 2, 3).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/model_spec.hpp"

namespace zf {

struct param_info {
  std::string name;
  std::vector<int64_t> shape;
  std::size_t offset = 0;  // in floats, into the flat parameter buffer
  std::size_t numel = 0;
  bool decay = false;  // AdamW weight decay applies (matrices and embeddings)
};

struct region {
  std::size_t begin = 0, end = 0;  // in floats, into the flat layout
  std::size_t size() const { return end - begin; }
};

struct block_quant;  // runtime/model/quant_linear.hpp

// The MoE part of a block (n_experts 0 in a dense block). Expert e's tensors sit at
// experts + e * stride + the offsets below (absent biases: up_b / down_b == npos).
template <class F>
struct moe_tensors {
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  F* router_w = nullptr;  // [C, E]
  F* router_b = nullptr;  // [E] the auxiliary-loss-free bias (moe_spec::router_bias), or null
  F* experts = nullptr;
  int n_experts = 0;
  std::size_t stride = 0, up_w = 0, up_b = npos, down_w = 0, down_b = npos;
  F* expert_up_w(int e) const { return at(e, up_w); }      // [C, expert_up_dim]
  F* expert_up_b(int e) const { return at(e, up_b); }      // [Ie]
  F* expert_down_w(int e) const { return at(e, down_w); }  // [Ie, C]
  F* expert_down_b(int e) const { return at(e, down_b); }  // [C]

 private:
  F* at(int e, std::size_t off) const {
    return off == npos ? nullptr : experts + static_cast<std::size_t>(e) * stride + off;
  }
};

// One block's tensors as pointers (F = const float for weights, float for gradients). Absent
// tensors (GPT-2 has no gate, Llama has no biases) are nullptr. quant: the block's quantized
// projections when the weights are a quantized model's (they replace qkv_w, o_w, up_w, down_w
// in forward), else nullptr. Shapes:
//   norm1_w/b, norm2_w/b [C]; qkv_w [C, Q+2KV]; qkv_b [Q+2KV]; o_w [Q, C]; o_b [C];
//   up_w [C, up_dim] (GPT-2 c_fc, or Llama gate|up); up_b [I]; down_w [I, C]; down_b [C].
template <class F>
struct block_tensors {
  F *norm1_w = nullptr, *norm1_b = nullptr, *qkv_w = nullptr, *qkv_b = nullptr, *o_w = nullptr,
    *o_b = nullptr, *norm2_w = nullptr, *norm2_b = nullptr, *up_w = nullptr, *up_b = nullptr,
    *down_w = nullptr, *down_b = nullptr;
  const block_quant* quant = nullptr;
  moe_tensors<F> moe;
};

// The tensors outside the blocks.
template <class F>
struct global_tensors {
  F *tok_emb = nullptr, *pos_emb = nullptr, *normf_w = nullptr, *normf_b = nullptr,
    *head = nullptr,        // head: lm_head.weight when untied, else nullptr (the head is tok_emb)
        *v_head = nullptr;  // v_head.weight [C] with a value head, else nullptr
};

class param_layout {
 public:
  std::vector<param_info> params;
  std::vector<region> regions;
  std::size_t total = 0;

  const param_info* find(const std::string& name) const;
  const param_info& at(const std::string& name) const;  // zf::error if unknown

  // Views of block l / the globals with every tensor at base + (offset - base_offset): base is
  // where the flat float `base_offset` lives (0 for a whole flat buffer, regions[r].begin for a
  // region's buffer).
  template <class F>
  block_tensors<F> block(F* base, int l, std::size_t base_offset = 0) const;
  template <class F>
  global_tensors<F> globals(F* base, std::size_t base_offset = 0) const;

  // The flat offset of block l's mlp.router.bias, or none.
  std::size_t router_bias(int l) const { return blocks_[static_cast<std::size_t>(l)].router_b; }
  // Block l's experts: expert e's tensors are [begin + e * stride, + stride); n 0 in a dense
  // block. They end the block's region (ZeRO splits a rank's expert slot off by this).
  struct expert_span {
    std::size_t begin = 0, stride = 0;
    int n = 0;
  };
  expert_span experts(int l) const {
    const offsets& o = blocks_[static_cast<std::size_t>(l)];
    return o.n_experts ? expert_span{o.experts, o.stride, o.n_experts} : expert_span{};
  }

  // Region of each global tensor (embeddings in 0, final norm and untied head in L+1).
  int region_of(const std::string& name) const;

 private:
  friend param_layout make_layout(const model_spec& s);

 public:  // make_layout's bookkeeping (no other user)
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  struct offsets {  // absolute float offsets, `none` for an absent tensor
    std::size_t t[12];
    std::size_t router = none, router_b = none, experts = none;  // MoE blocks
    int n_experts = 0;
    std::size_t stride = 0, e_off[4] = {none, none, none, none};  // up_w, up_b, down_w, down_b
  };

 private:
  std::vector<offsets> blocks_;
  std::size_t globals_[6] = {none, none, none, none, none, none};
};

param_layout make_layout(const model_spec& s);

template <class F>
block_tensors<F> param_layout::block(F* base, int l, std::size_t base_offset) const {
  const offsets& o = blocks_[static_cast<std::size_t>(l)];
  auto ptr = [&](std::size_t off) -> F* {
    return off == none ? nullptr : base + (off - base_offset);
  };
  auto at = [&](int i) { return ptr(o.t[i]); };
  block_tensors<F> b{at(0), at(1), at(2), at(3), at(4),  at(5),
                     at(6), at(7), at(8), at(9), at(10), at(11)};
  if (o.n_experts) {
    b.moe.router_w = ptr(o.router);
    b.moe.router_b = ptr(o.router_b);
    b.moe.experts = ptr(o.experts);
    b.moe.n_experts = o.n_experts;
    b.moe.stride = o.stride;
    b.moe.up_w = o.e_off[0];
    b.moe.up_b = o.e_off[1];
    b.moe.down_w = o.e_off[2];
    b.moe.down_b = o.e_off[3];
  }
  return b;
}

template <class F>
global_tensors<F> param_layout::globals(F* base, std::size_t base_offset) const {
  auto at = [&](int i) -> F* {
    return globals_[i] == none ? nullptr : base + (globals_[i] - base_offset);
  };
  return {at(0), at(1), at(2), at(3), at(4), at(5)};
}

}  // namespace zf
