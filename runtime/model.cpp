#include "runtime/model.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/activation.hpp"
#include "kernels/attention.hpp"
#include "kernels/embedding.hpp"
#include "kernels/matmul.hpp"
#include "kernels/norm.hpp"
#include "kernels/softmax.hpp"
#include "runtime/error.hpp"

namespace zf {
namespace k = zf::kernels;

const param_info* param_layout::find(const std::string& name) const {
  for (auto& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

param_layout gpt2_layout(const model_config& m) {
  param_layout L;
  const int64_t C = m.n_embd, V = m.vocab_size, P = m.n_positions;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    param_info p{std::move(name), std::move(shape), L.total, 1, decay};
    for (auto d : p.shape) p.numel *= static_cast<std::size_t>(d);
    L.total += p.numel;
    L.params.push_back(std::move(p));
  };
  add("wte.weight", {V, C}, true);
  add("wpe.weight", {P, C}, true);
  for (int l = 0; l < m.n_layer; ++l) {
    std::string h = "h." + std::to_string(l) + ".";
    add(h + "ln_1.weight", {C}, false);
    add(h + "ln_1.bias", {C}, false);
    add(h + "attn.c_attn.weight", {C, 3 * C}, true);
    add(h + "attn.c_attn.bias", {3 * C}, false);
    add(h + "attn.c_proj.weight", {C, C}, true);
    add(h + "attn.c_proj.bias", {C}, false);
    add(h + "ln_2.weight", {C}, false);
    add(h + "ln_2.bias", {C}, false);
    add(h + "mlp.c_fc.weight", {C, 4 * C}, true);
    add(h + "mlp.c_fc.bias", {4 * C}, false);
    add(h + "mlp.c_proj.weight", {4 * C, C}, true);
    add(h + "mlp.c_proj.bias", {C}, false);
  }
  add("ln_f.weight", {C}, false);
  add("ln_f.bias", {C}, false);
  return L;
}

std::vector<region> gpt2_regions(const param_layout& L, int n_layer) {
  std::vector<region> r;
  auto end_of = [&](std::size_t i) { return L.params[i].offset + L.params[i].numel; };
  r.push_back({0, end_of(1)});  // wte, wpe
  for (int l = 0; l < n_layer; ++l) {
    std::size_t first = 2 + 12 * std::size_t(l);
    r.push_back({L.params[first].offset, end_of(first + 11)});
  }
  std::size_t f = 2 + 12 * std::size_t(n_layer);
  r.push_back({L.params[f].offset, end_of(f + 1)});
  return r;
}

gpt2_model::gpt2_model(const model_config& cfg, bool own_params, bool own_grads)
    : cfg_(cfg), layout_(gpt2_layout(cfg)), regions_(gpt2_regions(layout_, cfg.n_layer)) {
  if (own_params) params_.resize(layout_.total);
  if (own_grads) grads_.resize(layout_.total);
}

float* gpt2_model::acquire_params(int r) {
  return param_access_ ? param_access_->acquire(r) : params_.data() + regions_[r].begin;
}
void gpt2_model::release_params(int r) {
  if (param_access_) param_access_->release(r);
}
float* gpt2_model::acquire_grads(int r) {
  return grad_access_ ? grad_access_->acquire(r) : grads_.data() + regions_[r].begin;
}
void gpt2_model::release_grads(int r) {
  if (grad_access_) grad_access_->release(r);
}

// Pointer to tensor param_index inside a region whose first float is at region_base.
float* gpt2_model::tensor(float* region_base, int r, std::size_t param_index) {
  return region_base + (layout_.params[param_index].offset - regions_[r].begin);
}

float* gpt2_model::param(const std::string& name) {
  auto* p = layout_.find(name);
  if (!p) fail("unknown parameter '{}'", name);
  return params_.data() + p->offset;
}

gpt2_model::layer_ptrs gpt2_model::layer(float* region_base, int l) {
  // The 12 tensors of block l are contiguous in layout order (region l+1).
  const std::size_t first = 2 + 12 * static_cast<std::size_t>(l);
  auto at = [&](int i) { return tensor(region_base, l + 1, first + i); };
  return {at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7), at(8), at(9), at(10), at(11)};
}

void init_gpt2_params(const param_layout& layout, int n_layer, uint64_t seed, float* out) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float proj_std = 0.02f / std::sqrt(2.0f * n_layer);
  for (auto& p : layout.params) {
    float* w = out + p.offset;
    bool is_ln_weight = p.name.find("ln_") != std::string::npos && p.name.ends_with(".weight");
    if (p.shape.size() == 2) {
      float std = p.name.ends_with("c_proj.weight") ? proj_std : 0.02f;
      for (std::size_t i = 0; i < p.numel; ++i) w[i] = std * normal(rng);
    } else {
      for (std::size_t i = 0; i < p.numel; ++i) w[i] = is_ln_weight ? 1.0f : 0.0f;
    }
  }
}

void gpt2_model::init_weights(uint64_t seed) {
  if (!params_.size()) fail("init_weights: this model does not own its parameters (ZeRO-3)");
  init_gpt2_params(layout_, cfg_.n_layer, seed, params_.data());
}

// Lays out every training activation for (b, t). Called with the arena counting, then again
// after reserve() to take the pointers, so both passes see the same sequence.
void gpt2_model::plan(int b, int t) {
  if (b == b_ && t == t_ && acts_.ready()) return;
  acts_ = arena{};
  const std::size_t BT = std::size_t(b) * t, C = cfg_.n_embd, V = cfg_.vocab_size, H = cfg_.n_head,
                    L = cfg_.n_layer;
  for (int pass = 0; pass < 2; ++pass) {
    encoded_ = acts_.take(BT * C);
    la_.resize(L);
    for (auto& a : la_) {
      a.ln1 = acts_.take(BT * C);
      a.ln1_mean = acts_.take(BT);
      a.ln1_rstd = acts_.take(BT);
      a.qkv = acts_.take(BT * 3 * C);
      a.att = acts_.take(std::size_t(b) * H * t * t);
      a.atty = acts_.take(BT * C);
      a.res2 = acts_.take(BT * C);
      a.ln2 = acts_.take(BT * C);
      a.ln2_mean = acts_.take(BT);
      a.ln2_rstd = acts_.take(BT);
      a.fch = acts_.take(BT * 4 * C);
      a.res3 = acts_.take(BT * C);
    }
    gelu_ = acts_.take(BT * 4 * C);  // GELU output, recomputed in backward (one per model)
    lnf_ = acts_.take(BT * C);
    lnf_mean_ = acts_.take(BT);
    lnf_rstd_ = acts_.take(BT);
    logits_ = acts_.take(BT * V);
    losses_ = acts_.take(BT);
    dres_ = acts_.take(BT * C);
    dln_ = acts_.take(BT * C);
    dbig_ = acts_.take(BT * 4 * C);
    dqkv_ = acts_.take(BT * 3 * C);
    datty_ = acts_.take(BT * C);
    datt_ = acts_.take(H * t * t);
    if (pass == 0) acts_.reserve();
  }
  b_ = b;
  t_ = t;
}

float gpt2_model::run_forward(const int* ids, const int* targets, int b, int t, bool fuse_xent,
                              float scale) {
  if (t > cfg_.n_positions)
    fail("sequence length {} exceeds model.n_positions {}", t, cfg_.n_positions);
  plan(b, t);
  const int BT = b * t, C = cfg_.n_embd, V = cfg_.vocab_size, H = cfg_.n_head;
  const int hd = cfg_.head_dim();
  for (int i = 0; i < BT; ++i)
    if (ids[i] < 0 || ids[i] >= V) fail("token id {} out of range 0..{}", ids[i], V - 1);

  const int L = cfg_.n_layer, R_emb = 0, R_lnf = L + 1;
  float* emb = acquire_params(R_emb);
  k::embedding_forward(ids, tensor(emb, R_emb, 0), tensor(emb, R_emb, 1), encoded_, b, t, C);
  release_params(R_emb);
  const float* x = encoded_;
  for (int l = 0; l < L; ++l) {
    auto w = layer(acquire_params(l + 1), l);
    auto& a = la_[l];
    k::layernorm_forward(x, w.ln1_w, w.ln1_b, a.ln1, a.ln1_mean, a.ln1_rstd, BT, C);
    k::linear_forward(a.ln1, w.attn_w, w.attn_b, a.qkv, BT, C, 3 * C);
    k::attention_shape s{t, t, 0, H, hd, 3 * C, 3 * C, 3 * C, C};
    for (int bi = 0; bi < b; ++bi) {
      const float* q = a.qkv + std::size_t(bi) * t * 3 * C;
      k::attention_forward(s, q, q + C, q + 2 * C, a.atty + std::size_t(bi) * t * C,
                           a.att + std::size_t(bi) * H * t * t);
    }
    k::linear_forward(a.atty, w.proj_w, w.proj_b, a.res2, BT, C, C);
    k::add_forward(a.res2, x, a.res2, std::size_t(BT) * C);
    k::layernorm_forward(a.res2, w.ln2_w, w.ln2_b, a.ln2, a.ln2_mean, a.ln2_rstd, BT, C);
    k::linear_forward(a.ln2, w.fc_w, w.fc_b, a.fch, BT, C, 4 * C);
    k::gelu_forward(a.fch, gelu_, std::size_t(BT) * 4 * C);
    k::linear_forward(gelu_, w.fcproj_w, w.fcproj_b, a.res3, BT, 4 * C, C);
    k::add_forward(a.res3, a.res2, a.res3, std::size_t(BT) * C);
    release_params(l + 1);
    x = a.res3;
  }
  const std::size_t lnf_w = 2 + 12 * std::size_t(L);
  float* fb = acquire_params(R_lnf);
  k::layernorm_forward(x, tensor(fb, R_lnf, lnf_w), tensor(fb, R_lnf, lnf_w + 1), lnf_, lnf_mean_,
                       lnf_rstd_, BT, C);
  release_params(R_lnf);
  // logits [BT, V] = lnf [BT, C] @ wte^T; wte stays held for the head's backward when fusing
  head_wte_ = tensor(acquire_params(R_emb), R_emb, 0);
  k::gemm(false, true, BT, V, C, 1.0f, lnf_, 0, head_wte_, 0, 0.0f, logits_, 0);
  if (!fuse_xent) {
    release_params(R_emb);
    head_wte_ = nullptr;
  }
  if (!targets) return 0.0f;
  int valid = 0;
  for (int i = 0; i < BT; ++i) {
    if (targets[i] >= V) fail("target id {} out of range 0..{}", targets[i], V - 1);
    valid += targets[i] >= 0;
  }
  if (valid == 0) {  // nothing to learn from: a zero gradient keeps backward (and ZeRO) uniform
    if (fuse_xent) std::fill(logits_, logits_ + std::size_t(BT) * V, 0.0f);
    return 0.0f;
  }
  if (fuse_xent)
    k::softmax_xent_fused(logits_, targets, losses_, BT, V, scale / valid);
  else
    k::softmax_xent_forward(logits_, targets, losses_, BT, V);
  double sum = 0;
  for (int i = 0; i < BT; ++i) sum += losses_[i];
  return static_cast<float>(sum / valid);
}

float gpt2_model::forward(const int* ids, const int* targets, int b, int t) {
  return run_forward(ids, targets, b, t, false, 1.0f);
}

float gpt2_model::forward_backward(const int* ids, const int* targets, int b, int t,
                                   float loss_scale) {
  if (!targets) fail("forward_backward needs targets");
  float loss = run_forward(ids, targets, b, t, true, loss_scale);
  const int BT = b * t, C = cfg_.n_embd, V = cfg_.vocab_size, H = cfg_.n_head;
  const int hd = cfg_.head_dim();
  const int L = cfg_.n_layer, R_emb = 0, R_lnf = L + 1;
  float* gemb = acquire_grads(R_emb);
  float* dwte = tensor(gemb, R_emb, 0);
  float* dwpe = tensor(gemb, R_emb, 1);
  // LM head: logits_ now holds dlogits [BT, V].
  k::gemm(false, false, BT, C, V, 1.0f, logits_, 0, head_wte_, 0, 0.0f, dln_, 0);
  k::gemm(true, false, V, C, BT, 1.0f, logits_, 0, lnf_, 0, 1.0f, dwte, 0);
  release_params(R_emb);
  head_wte_ = nullptr;
  std::fill(dres_, dres_ + std::size_t(BT) * C, 0.0f);
  const std::size_t lnf_w = 2 + 12 * std::size_t(L);
  {
    float* fb = acquire_params(R_lnf);
    float* gf = acquire_grads(R_lnf);
    k::layernorm_backward(la_.back().res3, tensor(fb, R_lnf, lnf_w), lnf_mean_, lnf_rstd_, dln_,
                          dres_, tensor(gf, R_lnf, lnf_w), tensor(gf, R_lnf, lnf_w + 1), BT, C);
    release_grads(R_lnf);
    release_params(R_lnf);
  }
  for (int l = L - 1; l >= 0; --l) {
    auto w = layer(acquire_params(l + 1), l);
    auto g = layer(acquire_grads(l + 1), l);
    auto& a = la_[l];
    const float* x_in = l == 0 ? encoded_ : la_[l - 1].res3;
    // MLP: res3 = res2 + c_proj(gelu(c_fc(ln2(res2)))); dres_ holds d res3.
    k::gelu_forward(a.fch, gelu_, std::size_t(BT) * 4 * C);
    k::linear_backward(gelu_, w.fcproj_w, dres_, dbig_, g.fcproj_w, g.fcproj_b, BT, 4 * C, C);
    k::gelu_backward(a.fch, dbig_, dbig_, std::size_t(BT) * 4 * C);
    k::linear_backward(a.ln2, w.fc_w, dbig_, dln_, g.fc_w, g.fc_b, BT, C, 4 * C);
    k::layernorm_backward(a.res2, w.ln2_w, a.ln2_mean, a.ln2_rstd, dln_, dres_, g.ln2_w, g.ln2_b,
                          BT, C);
    // Attention: res2 = x_in + c_proj(attn(c_attn(ln1(x_in)))); dres_ holds d res2.
    k::linear_backward(a.atty, w.proj_w, dres_, datty_, g.proj_w, g.proj_b, BT, C, C);
    k::attention_shape s{t, t, 0, H, hd, 3 * C, 3 * C, 3 * C, C};
    for (int bi = 0; bi < b; ++bi) {
      const std::size_t qo = std::size_t(bi) * t * 3 * C;
      const float* q = a.qkv + qo;
      float* dq = dqkv_ + qo;
      k::attention_backward(s, q, q + C, q + 2 * C, a.att + std::size_t(bi) * H * t * t,
                            datty_ + std::size_t(bi) * t * C, datt_, dq, dq + C, dq + 2 * C);
    }
    k::linear_backward(a.ln1, w.attn_w, dqkv_, dln_, g.attn_w, g.attn_b, BT, C, 3 * C);
    k::layernorm_backward(x_in, w.ln1_w, a.ln1_mean, a.ln1_rstd, dln_, dres_, g.ln1_w, g.ln1_b, BT,
                          C);
    release_grads(l + 1);
    release_params(l + 1);
  }
  k::embedding_backward(ids, dres_, dwte, dwpe, b, t, C);
  release_grads(R_emb);
  return loss;
}

kv_cache gpt2_model::make_cache() const {
  kv_cache c;
  std::size_t n = std::size_t(cfg_.n_layer) * cfg_.n_positions * cfg_.n_embd;
  c.k.resize(n);
  c.v.resize(n);
  return c;
}

void gpt2_model::decode(const int* ids, int n, kv_cache& cache, float* out) {
  const int C = cfg_.n_embd, V = cfg_.vocab_size, H = cfg_.n_head, P = cfg_.n_positions;
  const int hd = cfg_.head_dim(), pos = cache.len;
  if (n <= 0) fail("decode needs at least one token");
  if (pos + n > P) fail("context full: {} + {} tokens exceed model.n_positions {}", pos, n, P);
  for (int i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V) fail("token id {} out of range 0..{}", ids[i], V - 1);
  if (!infer_.ready()) {
    for (int pass = 0; pass < 2; ++pass) {
      ix_ = infer_.take(std::size_t(P) * C);
      iln_ = infer_.take(std::size_t(P) * C);
      iqkv_ = infer_.take(std::size_t(P) * 3 * C);
      iatty_ = infer_.take(std::size_t(P) * C);
      ifc_ = infer_.take(std::size_t(P) * 4 * C);
      itmp_ = infer_.take(std::size_t(P) * C);
      iatt_ = infer_.take(std::size_t(H) * P * P);
      if (pass == 0) infer_.reserve();
    }
  }
  const int L = cfg_.n_layer, R_emb = 0, R_lnf = L + 1;
  float* emb = acquire_params(R_emb);
  k::embedding_forward(ids, tensor(emb, R_emb, 0), tensor(emb, R_emb, 1), ix_, 1, n, C, pos);
  release_params(R_emb);
  const std::size_t nc = std::size_t(n) * C;
  for (int l = 0; l < L; ++l) {
    auto w = layer(acquire_params(l + 1), l);
    float* kc = cache.k.data() + std::size_t(l) * P * C;
    float* vc = cache.v.data() + std::size_t(l) * P * C;
    k::layernorm_forward(ix_, w.ln1_w, w.ln1_b, iln_, nullptr, nullptr, n, C);
    k::linear_forward(iln_, w.attn_w, w.attn_b, iqkv_, n, C, 3 * C);
    for (int i = 0; i < n; ++i) {
      const float* row = iqkv_ + std::size_t(i) * 3 * C;
      std::copy(row + C, row + 2 * C, kc + std::size_t(pos + i) * C);
      std::copy(row + 2 * C, row + 3 * C, vc + std::size_t(pos + i) * C);
    }
    k::attention_shape s{n, pos + n, pos, H, hd, 3 * C, C, C, C};
    k::attention_forward(s, iqkv_, kc, vc, iatty_, iatt_);
    k::linear_forward(iatty_, w.proj_w, w.proj_b, itmp_, n, C, C);
    k::accumulate(ix_, itmp_, nc);
    k::layernorm_forward(ix_, w.ln2_w, w.ln2_b, iln_, nullptr, nullptr, n, C);
    k::linear_forward(iln_, w.fc_w, w.fc_b, ifc_, n, C, 4 * C);
    k::gelu_forward(ifc_, ifc_, std::size_t(n) * 4 * C);
    k::linear_forward(ifc_, w.fcproj_w, w.fcproj_b, itmp_, n, 4 * C, C);
    k::accumulate(ix_, itmp_, nc);
    release_params(l + 1);
  }
  const float* last = ix_ + std::size_t(n - 1) * C;
  const std::size_t lnf_w = 2 + 12 * std::size_t(L);
  float* fb = acquire_params(R_lnf);
  k::layernorm_forward(last, tensor(fb, R_lnf, lnf_w), tensor(fb, R_lnf, lnf_w + 1), iln_, nullptr,
                       nullptr, 1, C);
  release_params(R_lnf);
  emb = acquire_params(R_emb);
  k::gemm(false, true, 1, V, C, 1.0f, iln_, 0, tensor(emb, R_emb, 0), 0, 0.0f, out, 0);
  release_params(R_emb);
  cache.len = pos + n;
}

}  // namespace zf
