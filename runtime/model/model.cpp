// Train and score modes of the one model (model.hpp). Rows are tokens: BT = b*t rows of width
// C = hidden; Q = q_dim, D = qkv_dim, U = up_dim, I = intermediate, H = n_head, V = vocab.
#include "runtime/model/model.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/attention.hpp"
#include "kernels/embedding.hpp"
#include "kernels/matmul.hpp"
#include "kernels/softmax.hpp"
#include "runtime/core/error.hpp"

namespace zf {
namespace k = zf::kernels;

namespace {

// bf16 values in an fbuffer of (n + 1) / 2 floats.
std::uint16_t* bf16_of(fbuffer& b) {
  return reinterpret_cast<std::uint16_t*>(b.data());
}

// Causal self-attention of one sequence of t rows inside the fused qkv rows [t, D]: q heads at
// column 0, k at Q, v at Q + KV; the output [t, Q].
k::attention_shape attention_shape_of(const model_spec& s, int t) {
  const int D = s.qkv_dim();
  return {.tq = t,
          .tk = t,
          .offset = 0,
          .n_head = s.n_head,
          .head_dim = s.head_dim,
          .ldq = D,
          .ldk = D,
          .ldv = D,
          .ldo = s.q_dim(),
          .n_kv_head = s.n_kv_head};
}

}  // namespace

void init_params(const param_layout& layout, int n_layer, uint64_t seed, float* out) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float proj_std = 0.02f / std::sqrt(2.0f * n_layer);
  for (auto& p : layout.params) {
    float* w = out + p.offset;
    if (p.shape.size() == 2) {
      const bool residual_out = p.name.ends_with("c_proj.weight") ||
                                p.name.ends_with("o_proj.weight") ||
                                p.name.ends_with("down_proj.weight");
      const float std = residual_out ? proj_std : 0.02f;
      for (std::size_t i = 0; i < p.numel; ++i) w[i] = std * normal(rng);
    } else {
      const bool norm_weight =
          (p.name.find("ln_") != std::string::npos || p.name.find("norm") != std::string::npos) &&
          p.name.ends_with(".weight");
      std::fill(w, w + p.numel, norm_weight ? 1.0f : 0.0f);
    }
  }
}

param_layout layout_of(const model_config& m) {
  return make_layout(spec_of(m));
}

transformer::transformer(const model_config& m, bool own_params, bool own_grads, device where)
    : transformer(spec_of(m), own_params, own_grads, where) {}

transformer::transformer(const model_spec& spec, bool own_params, bool own_grads, device where)
    : spec_(spec), where_(where), layout_(make_layout(spec)) {
  const k::device_scope on(where_);  // cuda: refused here without a GPU (unless simulated)
  L_ = spec.n_layer;
  R_final_ = L_ + 1;
  if (spec.moe.any()) {
    if (where_ == device::cuda)
      fail("model.moe: MoE models do not run on the cuda device yet (use train.device = cpu)");
    expert_spec_ = moe::expert_spec(spec);
  }
  for (fbuffer* buf : {&params_, &grads_, &head16_, &lnf16_, &dlogits16_, &ops16_, &rope_, &io_})
    *buf = fbuffer(where_);
  acts_ = arena(where_);
  if (own_params) params_.resize(layout_.total);
  if (own_grads) grads_.resize(layout_.total);
  const std::size_t rt = block::rope_table_floats(spec);
  if (rt) {
    rope_.resize(2 * rt);
    block::fill_rope_table(spec, rope_.data(), rope_.data() + rt, where_);
    rope_tab_ = {rope_.data(), rope_.data() + rt};
  }
}

void transformer::cpu_only(const char* what) const {
  if (where_ == device::cuda)
    fail("{} does not run on the cuda device yet (use a cpu model: train.device = cpu)", what);
}

const int* transformer::ints_on_device(const int* host, int n, int slot) {
  if (where_ == device::cpu) return host;
  int* d = reinterpret_cast<int*>(io_.data()) + std::size_t(slot) * n;
  k::gpu_copy(d, host, std::size_t(n) * sizeof(int));  // pageable host memory: staged at once
  return d;
}

float* transformer::acquire_params(int r) {
  return param_access_ ? param_access_->acquire(r) : params_.data() + layout_.regions[r].begin;
}
void transformer::release_params(int r) {
  if (param_access_) param_access_->release(r);
}
float* transformer::acquire_grads(int r) {
  return grad_access_ ? grad_access_->acquire(r) : grads_.data() + layout_.regions[r].begin;
}
void transformer::release_grads(int r) {
  if (grad_access_) grad_access_->release(r);
}

block::weights transformer::block_w(float* base, int l) const {
  block::weights w = layout_.block<const float>(base, l, layout_.regions[l + 1].begin);
  if (quant_) w.quant = &quant_->blocks[std::size_t(l)];
  return w;
}

void transformer::set_quant(std::shared_ptr<const lm_quant> q) {
  if (q) cpu_only("a quantized model");
  if (q && q->blocks.size() != std::size_t(L_))
    fail("quantized linears for {} layers given to a {}-layer model", q->blocks.size(), L_);
  quant_ = std::move(q);
}
block::grads transformer::block_g(float* base, int l) const {
  return layout_.block<float>(base, l, layout_.regions[l + 1].begin);
}

float* transformer::param(const std::string& name) {
  return params_.data() + layout_.at(name).offset;
}

void transformer::init_weights(uint64_t seed) {
  if (!params_.size()) fail("init_weights: this model does not own its parameters (ZeRO-3)");
  if (where_ == device::cpu) return init_params(layout_, spec_.n_layer, seed, params_.data());
  std::vector<float> host(layout_.total);  // drawn on the host (the same bits), then copied up
  init_params(layout_, spec_.n_layer, seed, host.data());
  load_params(host.data());
}

// Lays out every training activation for (b, t). A shape whose activations fit the buffer
// already held (a curriculum's shorter windows, an evaluation batch after training ones) is laid
// out in it: no reallocation and no first touch of fresh pages; a larger one grows the buffer.
void transformer::plan(int b, int t) {
  if (b == b_ && t == t_ && acts_.ready()) return;
  arena count;  // the counting pass: no buffer, only the sizes
  lay_out(count, b, t);
  if (acts_.ready() && count.counted() <= acts_.capacity()) {
    acts_.rewind();
  } else {
    acts_ = arena{where_};
    lay_out(acts_, b, t);
    acts_.reserve();
  }
  lay_out(acts_, b, t);
  const std::size_t BT = std::size_t(b) * t;
  pos_.resize(BT);
  for (std::size_t i = 0; i < BT; ++i) pos_[i] = static_cast<int>(i % std::size_t(t));
  pos_dev_ = pos_.data();
  if (where_ == device::cuda) {  // ids | targets | positions, the positions copied once here
    io_.resize(3 * BT);
    int* pos = reinterpret_cast<int*>(io_.data()) + 2 * BT;
    k::gpu_copy(pos, pos_.data(), BT * sizeof(int));
    k::gpu_synchronize();
    pos_dev_ = pos;
  }
  b_ = b;
  t_ = t;
}

// plan()'s sequence of takes (the same in the counting and the real pass).
void transformer::lay_out(arena& acts, int b, int t) {
  const std::size_t BT = std::size_t(b) * t, C = spec_.hidden, V = spec_.vocab_size,
                    H = spec_.n_head, Q = spec_.q_dim(), D = spec_.qkv_dim(), U = spec_.up_dim(),
                    I = spec_.intermediate;
  encoded_ = acts.take(BT * C);
  la_.resize(std::size_t(L_));
  for (auto& a : la_) {
    a.ln1 = acts.take(BT * C);
    a.ln1_mean = acts.take(BT);
    a.ln1_rstd = acts.take(BT);
    a.qkv = acts.take(BT * D);
    a.att = acts.take(std::size_t(b) * H * t * t);
    a.atty = acts.take(BT * Q);
    a.res2 = acts.take(BT * C);
    a.ln2 = acts.take(BT * C);
    a.ln2_mean = acts.take(BT);
    a.ln2_rstd = acts.take(BT);
    const int l = static_cast<int>(&a - la_.data());
    a.h = spec_.dense_mlp(l) ? acts.take(BT * U) : nullptr;
    a.res3 = acts.take(BT * C);
    if (const int E = spec_.moe.experts_of(l)) {
      moe::lay_out(acts, spec_, E, int(BT), a.moe);
      if (grouped())
        moe::lay_out(acts, spec_, E, int(BT), moe_group_->world(), moe_group_->expert_parallel(),
                     a.moe_par);
    }
  }
  if (spec_.moe.any()) {
    const int W = grouped() ? moe_group_->world() : 1,
              ep = grouped() ? moe_group_->expert_parallel() : 1;
    moe::lay_out(acts, spec_, int(BT), true, moe_sc_, moe::expert_rows(spec_, int(BT), W, ep));
    if (grouped()) moe::lay_out(acts, spec_, int(BT), W, ep, moe_psc_);
  }
  act_ = acts.take(BT * I);  // MLP activation, recomputed in backward (one per model)
  lnf_ = acts.take(BT * C);
  lnf_mean_ = acts.take(BT);
  lnf_rstd_ = acts.take(BT);
  logits_ = acts.take(BT * V);
  losses_ = acts.take(BT);
  dres_ = acts.take(BT * C);
  dln_ = acts.take(BT * C);
  dbig_ = acts.take(BT * U);
  dqkv_ = acts.take(BT * D);
  datty_ = acts.take(BT * Q);
  datt_ = acts.take(H * t * t);
}

// plan()'s takes, counted (each padded to 16 floats as arena::take pads them), in double so that
// any sizes can be counted.
double activation_floats(const model_spec& s, int b, int t, int world, int ep) {
  const double BT = double(b) * t, C = s.hidden, V = s.vocab_size, H = s.n_head,
               Q = double(s.n_head) * s.head_dim, D = Q + 2.0 * s.n_kv_head * s.head_dim,
               I = s.intermediate, U = s.arch == model_arch::llama ? 2 * I : I;
  auto pad = [](double n) { return std::ceil(n / 16) * 16; };
  const double layer =
      4 * pad(BT * C) + 4 * pad(BT) + pad(BT * D) + pad(double(b) * H * t * t) + pad(BT * Q);
  double layers = 0;
  for (int l = 0; l < s.n_layer; ++l) {
    layers += layer + (s.dense_mlp(l) ? pad(BT * U) : 0);
    if (const int E = s.moe.experts_of(l)) layers += moe::state_floats(s, E, int(BT));
  }
  if (s.moe.any()) {
    layers += moe::scratch_floats(s, int(BT), true, moe::expert_rows(s, int(BT), world, ep));
    if (world > 1) layers += moe::parallel_floats(s, int(BT), world, ep);
  }
  return pad(BT * C) + layers + pad(BT * I) + pad(BT * C) + 3 * pad(BT) + pad(BT * V) +
         2 * pad(BT * C) + pad(BT * U) + pad(BT * D) + pad(BT * Q) + pad(H * t * t);
}

void transformer::block_forward(int l, const float* x, int b, int t, const int* pos, float* out) {
  const int n = b * t, Q = spec_.q_dim(), D = spec_.qkv_dim();
  const block::weights w = block_w(acquire_params(l + 1), l);
  layer_acts& a = la_[l];
  block::norm_forward(spec_, x, w.norm1_w, w.norm1_b, a.ln1, a.ln1_mean, a.ln1_rstd, n);
  if (observer_) observer_->input(l, 0, a.ln1, n);
  const block::operands16* o16 = ops16(l);
  block::qkv_forward(spec_, w, a.ln1, a.qkv, pos, rope_tab_, n, o16);
  const k::attention_shape s = attention_shape_of(spec_, t);
  const std::size_t att_stride = std::size_t(spec_.n_head) * t * t;
  for (int bi = 0; bi < b; ++bi) {
    const float* q = a.qkv + std::size_t(bi) * t * D;
    k::attention_forward(s, q, q + Q, q + Q + spec_.kv_dim(), a.atty + std::size_t(bi) * t * Q,
                         a.att + bi * att_stride);
  }
  if (observer_) observer_->input(l, 1, a.atty, n);
  block::attn_out_forward(spec_, w, a.atty, Q, x, a.res2, n, o16);  // the last read of x
  block::norm_forward(spec_, a.res2, w.norm2_w, w.norm2_b, a.ln2, a.ln2_mean, a.ln2_rstd, n);
  mlp_part_forward(l, w, n, out);
  release_params(l + 1);
}

void transformer::block_forward_alone(int l, const float* x, int b, int t, float* out) {
  cpu_only("a block alone (layer-wise distillation)");
  const kernels::precision_scope compute(precision_);
  if (l < 0 || l >= L_) fail("block_forward_alone: layer {} of a {}-layer model", l, L_);
  if (t > spec_.max_positions)
    fail("sequence length {} exceeds the model's context of {} positions", t, spec_.max_positions);
  plan(b, t);
  plan_ops16(true, b * t);
  block_forward(l, x, b, t, pos_dev_, out);
}

void transformer::block_backward_alone(int l, const float* x, int b, int t, float* d) {
  cpu_only("a block alone (layer-wise distillation)");
  const kernels::precision_scope compute(precision_);
  if (b != b_ || t != t_ || !acts_.ready())
    fail("block_backward_alone: no forward of a [{}, {}] batch to go back through", b, t);
  block_backward(l, x, b, t, pos_dev_, d);
}

void transformer::layer_forward(int l, int b, int t) {
  const float* x = l == 0 ? encoded_ : la_[l - 1].res3;
  float* out = la_[l].res3;
  const int slot = ltd_slot_[std::size_t(l)];
  if (slot < 0) return block_forward(l, x, b, t, pos_dev_, out);
  // Dropping: the block runs on the b*k kept rows, which sit compact at the front of the
  // layer's output buffer (gathered there, overwritten by the block's output once read), at
  // their original positions; then the output is spread over [b*t] rows around x's dropped rows.
  // Its saved activations are compact (b*k rows of the b*t planned).
  const int k = ltd_keep_;
  const int* kept = ltd_pos_.data() + std::size_t(slot) * b * k;
  gather_rows(x, kept, b, t, k, spec_.hidden, out);
  block_forward(l, out, b, k, kept, out);
  expand_rows(out, x, kept, b, t, k, spec_.hidden);
}

float transformer::run_forward(const int* ids, const int* targets, int b, int t, bool fuse_xent,
                               float scale, bool lm_head, const token_drop* drop) {
  const kernels::precision_scope compute(precision_);
  const k::device_scope on(where_);
  if (observer_) cpu_only("a calibration observer");
  if (param_access_ || grad_access_) cpu_only("ZeRO stage 2-3 region access");
  if (t > spec_.max_positions)
    fail("sequence length {} exceeds the model's context of {} positions", t, spec_.max_positions);
  plan(b, t);
  plan_ops16(fuse_xent, b * t);  // forward_backward and forward_rl
  set_drop(drop, b, t);
  const int BT = b * t, C = spec_.hidden, V = spec_.vocab_size;
  for (int i = 0; i < BT; ++i)
    if (ids[i] < 0 || ids[i] >= V) fail("token id {} out of range 0..{}", ids[i], V - 1);

  const std::size_t emb0 = layout_.regions[R_emb_].begin;
  auto ge = layout_.globals<const float>(acquire_params(R_emb_), emb0);
  k::embedding_forward(ints_on_device(ids, BT, 0), ge.tok_emb, ge.pos_emb, encoded_, b, t, C);
  release_params(R_emb_);
  for (int l = 0; l < L_; ++l) layer_forward(l, b, t);
  const std::size_t fin0 = layout_.regions[R_final_].begin;
  float* fb = acquire_params(R_final_);
  auto gf = layout_.globals<float>(fb, fin0);
  block::norm_forward(spec_, la_.back().res3, gf.normf_w, gf.normf_b, lnf_, lnf_mean_, lnf_rstd_,
                      BT);
  if (observer_) observer_->input(-1, 4, lnf_, BT);
  if (values_out_) {  // the value head: one dot product per row, while its region is held
    if (!gf.v_head) fail("this model has no value head (model.value_head)");
    k::gemm(false, true, BT, 1, C, 1.0f, lnf_, 0, gf.v_head, 0, 0.0f, values_out_, 0);
  }
  if (!lm_head) {  // reward models and critics: no logits; the final region is released
    release_params(R_final_);
    return 0.0f;
  }
  // logits [BT, V] = lnf [BT, C] @ head^T. The head's region stays held for the head's
  // backward when fusing: the untied head lives in the final region, the tied one is wte.
  int R_head = R_final_;
  head_w_ = gf.head;
  if (!spec_.tied_head) {
    head_base_ = fb;
  } else {
    release_params(R_final_);
    R_head = R_emb_;
    head_base_ = acquire_params(R_emb_);
    head_w_ = layout_.globals<float>(head_base_, emb0).tok_emb;
  }
  head16_rows_ = -1;
  if (quant_ && quant_->head) {
    if (fuse_xent) fail("a quantized model runs forward only: its head cannot be trained");
    quant_->head->forward(lnf_, C, BT, nullptr, logits_, V, false);
  } else if (precision_ == kernels::precision::bf16) {
    // Rounded once: the head's weight and lnf feed the backward's GEMMs too (head_backward).
    head16_.resize((std::size_t(V) * C + 1) / 2);
    lnf16_.resize((std::size_t(BT) * C + 1) / 2);
    k::round_bf16(head_w_, V, C, 0, bf16_of(head16_));
    k::round_bf16(lnf_, BT, C, 0, bf16_of(lnf16_));
    k::gemm_bf16(false, true, BT, V, C, 1.0f, bf16_of(lnf16_), 0, bf16_of(head16_), 0, 0.0f,
                 logits_, 0);
    head16_rows_ = BT;
  } else {
    k::gemm(false, true, BT, V, C, 1.0f, lnf_, 0, head_w_, 0, 0.0f, logits_, 0);
  }
  if (!fuse_xent) {
    release_params(R_head);
    head_w_ = head_base_ = nullptr;
  }
  if (!targets) return 0.0f;
  int valid = 0;
  for (int i = 0; i < BT; ++i) {
    if (targets[i] >= V) fail("target id {} out of range 0..{}", targets[i], V - 1);
    valid += targets[i] >= 0;
  }
  if (valid == 0) {  // nothing to learn from: a zero gradient keeps backward (and ZeRO) uniform
    if (fuse_xent) k::clear(logits_, std::size_t(BT) * V);
    return 0.0f;
  }
  const int* tk = ints_on_device(targets, BT, 1);
  if (fuse_xent)
    k::softmax_xent_fused(logits_, tk, losses_, BT, V, scale / valid);
  else
    k::softmax_xent_forward(logits_, tk, losses_, BT, V);
  const float* losses = losses_;
  if (where_ == device::cuda) {  // the step's one wait: its [BT] losses, summed on the host
    losses_host_.resize(std::size_t(BT));
    k::gpu_copy(losses_host_.data(), losses_, std::size_t(BT) * sizeof(float));
    k::gpu_synchronize();
    losses = losses_host_.data();
  }
  double sum = 0;
  for (int i = 0; i < BT; ++i) sum += losses[i];
  return static_cast<float>(sum / valid);
}

void transformer::forward_hidden(const int* ids, int b, int t) {
  run_forward(ids, nullptr, b, t, false, 1.0f, false);
}

float transformer::forward(const int* ids, const int* targets, int b, int t) {
  return run_forward(ids, targets, b, t, false, 1.0f);
}

// The head's backward and the final norm's: logits_ holds dlogits [BT, V]; leaves d(final x)
// accumulated into dres_ (zeroed here first).
void transformer::head_backward(int R_head, float* gemb, const float* dvalue, bool lm) {
  const int BT = b_ * t_, C = spec_.hidden, V = spec_.vocab_size;
  const std::size_t fin0 = layout_.regions[R_final_].begin;
  float* gfb = acquire_grads(R_final_);
  auto gg = layout_.globals<float>(gfb, fin0);
  if (lm) {
    float* dhead = spec_.tied_head
                       ? layout_.globals<float>(gemb, layout_.regions[R_emb_].begin).tok_emb
                       : gg.head;
    if (head16_rows_ == BT) {  // the forward's bf16 head: dlogits rounded once for both GEMMs
      dlogits16_.resize((std::size_t(BT) * V + 1) / 2);
      k::round_bf16(logits_, BT, V, 0, bf16_of(dlogits16_));
      k::gemm_bf16(false, false, BT, C, V, 1.0f, bf16_of(dlogits16_), 0, bf16_of(head16_), 0, 0.0f,
                   dln_, 0);
      k::gemm_bf16(true, false, V, C, BT, 1.0f, bf16_of(dlogits16_), 0, bf16_of(lnf16_), 0, 1.0f,
                   dhead, 0);
    } else {
      k::gemm(false, false, BT, C, V, 1.0f, logits_, 0, head_w_, 0, 0.0f, dln_, 0);
      k::gemm(true, false, V, C, BT, 1.0f, logits_, 0, lnf_, 0, 1.0f, dhead, 0);
    }
    if (R_head != R_final_) {  // tied: done with wte's parameters; fetch the final norm's
      release_params(R_head);
      head_base_ = acquire_params(R_final_);
    }
  } else {  // no LM head in this forward: only the value head feeds the final norm
    k::clear(dln_, std::size_t(BT) * C);
    head_base_ = acquire_params(R_final_);
  }
  auto pf = layout_.globals<const float>(head_base_, fin0);
  if (dvalue) {  // values [BT] = lnf [BT, C] . v_head [C]
    k::gemm(false, false, BT, C, 1, 1.0f, dvalue, 0, pf.v_head, 0, 1.0f, dln_, 0);
    k::gemm(true, false, 1, C, BT, 1.0f, dvalue, 0, lnf_, 0, 1.0f, gg.v_head, 0);
  }
  k::clear(dres_, std::size_t(BT) * C);
  block::norm_backward(spec_, la_.back().res3, pf.normf_w, lnf_mean_, lnf_rstd_, dln_, dres_,
                       gg.normf_w, gg.normf_b, BT);
  release_grads(R_final_);
  release_params(R_final_);
  head_w_ = head_base_ = nullptr;
}

void transformer::block_backward(int l, const float* x, int b, int t, const int* pos, float* d) {
  const int n = b * t, Q = spec_.q_dim(), D = spec_.qkv_dim(), KV = spec_.kv_dim();
  const block::weights w = block_w(acquire_params(l + 1), l);
  const block::grads g = block_g(acquire_grads(l + 1), l);
  layer_acts& a = la_[l];
  // MLP: out = res2 + mlp(norm2(res2)); the residual passes d through unchanged.
  mlp_part_backward(l, w, g, n, d);
  block::norm_backward(spec_, a.res2, w.norm2_w, a.ln2_mean, a.ln2_rstd, dln_, d, g.norm2_w,
                       g.norm2_b, n);
  // Attention: res2 = x + attn(norm1(x)) @ o_w; d holds d res2.
  const block::operands16* o16 = ops16(l);
  block::attn_out_backward(spec_, w, g, a.atty, d, datty_, n, o16);
  const k::attention_shape s = attention_shape_of(spec_, t);
  const std::size_t att_stride = std::size_t(spec_.n_head) * t * t;
  for (int bi = 0; bi < b; ++bi) {
    const std::size_t qo = std::size_t(bi) * t * D;
    const float* q = a.qkv + qo;
    float* dq = dqkv_ + qo;
    k::attention_backward(s, q, q + Q, q + Q + KV, a.att + bi * att_stride,
                          datty_ + std::size_t(bi) * t * Q, datt_, dq, dq + Q, dq + Q + KV);
  }
  block::qkv_backward(spec_, w, g, a.ln1, dqkv_, dln_, pos, rope_tab_, n, o16);
  block::norm_backward(spec_, x, w.norm1_w, a.ln1_mean, a.ln1_rstd, dln_, d, g.norm1_w, g.norm1_b,
                       n);
  release_grads(l + 1);
  release_params(l + 1);
}

// dres_ holds d(res3) of layer l on entry and d(layer input) on exit.
void transformer::layer_backward(int l, int b, int t) {
  const float* x = l == 0 ? encoded_ : la_[l - 1].res3;
  const int slot = ltd_slot_[std::size_t(l)];
  if (slot < 0) return block_backward(l, x, b, t, pos_dev_, dres_);
  // Dropping: the dropped rows' gradient passes through (identity); the kept rows' goes through
  // the block on compact rows, in two buffers no longer read at this point of the backward:
  // this layer's own output res3 (read by layer l+1's or the final norm's backward, done) holds
  // d, and the final norm's output lnf_ (read by the head's backward, done) the re-gathered
  // input that norm1's backward needs.
  const int k = ltd_keep_;
  const int* kept = ltd_pos_.data() + std::size_t(slot) * b * k;
  float* d = la_[l].res3;
  gather_rows(dres_, kept, b, t, k, spec_.hidden, d);
  gather_rows(x, kept, b, t, k, spec_.hidden, lnf_);
  block_backward(l, lnf_, b, k, kept, d);
  scatter_rows(d, kept, b, t, k, spec_.hidden, dres_);
}

// random-LTD state for the forward_backward under way (nothing drops when drop is null).
void transformer::set_drop(const token_drop* drop, int b, int t) {
  ltd_slot_.assign(std::size_t(L_), -1);
  ltd_keep_ = 0;
  if (!drop || drop->layers.empty()) return;
  kept_positions(*drop, b, t, ltd_pos_);
  ltd_keep_ = drop->keep;
  for (std::size_t i = 0; i < drop->layers.size(); ++i)
    ltd_slot_[std::size_t(drop->layers[i])] = static_cast<int>(i);
}

float transformer::forward_backward(const int* ids, const int* targets, int b, int t,
                                    float loss_scale, const token_drop* drop) {
  const kernels::precision_scope compute(precision_);
  if (!targets) fail("forward_backward needs targets");
  if (quant_) fail("a quantized model runs forward only: its linears cannot be trained");
  if (drop) validate_token_drop(*drop, L_, b, t);
  if (drop && !drop->layers.empty()) cpu_only("random-LTD (train.random_ltd)");
  training_ = true;
  aux_scale_ = loss_scale;
  float loss = 0;
  try {
    loss = run_forward(ids, targets, b, t, true, loss_scale, true, drop);
  } catch (...) {
    training_ = false;
    throw;
  }
  training_ = false;
  if (spec_.moe.any()) {
    moe::step_stats now;
    for (auto& l : moe_stats()) {
      now.layers.push_back({l.layer, 1.0, double(l.tokens), double(l.dropped), l.balance, l.z_loss,
                            l.entropy, std::vector<double>(l.counts.begin(), l.counts.end())});
    }
    moe_step_.add(now);
  }
  backward_from_head(ids, nullptr, true);
  return loss;
}

void transformer::backward_from_head(const int* ids, const float* dvalue, bool lm) {
  const k::device_scope on(where_);
  if (where_ == device::cuda) ids = reinterpret_cast<const int*>(io_.data());  // run_forward's
  const int R_head = spec_.tied_head ? R_emb_ : R_final_;
  float* gemb = acquire_grads(R_emb_);  // held through the whole backward (tied head, wte)
  head_backward(R_head, gemb, dvalue, lm);
  for (int l = L_ - 1; l >= 0; --l) layer_backward(l, b_, t_);
  auto ge = layout_.globals<float>(gemb, layout_.regions[R_emb_].begin);
  k::embedding_backward(ids, dres_, ge.tok_emb, ge.pos_emb, b_, t_, spec_.hidden);
  release_grads(R_emb_);
}

}  // namespace zf
