#include "runtime/core/model_spec.hpp"

#include <climits>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "runtime/core/error.hpp"

namespace zf {

const char* arch_name(model_arch a) {
  return a == model_arch::llama ? "llama" : "gpt2";
}

void check_moe(const model_spec& s) {
  const moe_spec& m = s.moe;
  if (m.experts.empty()) return;
  if (int(m.experts.size()) != s.n_layer)
    fail("model.moe: expert counts for {} layers given to a {}-layer model", m.experts.size(),
         s.n_layer);
  if (!m.any()) return;
  for (int l = 0; l < s.n_layer; ++l) {
    const int E = m.experts_of(l);
    if (E < 0 || E > 65536) fail("model.moe.layer_experts: layer {} has {} experts", l, E);
    if (E > 0 && (m.top_k < 1 || m.top_k > E))
      fail(
          "model.moe.top_k: expected 1 to the experts of every MoE layer (layer {} has {}), got {}",
          l, E, m.top_k);
  }
  if (m.expert_intermediate < 1)
    fail("model.moe.expert_intermediate: expected >= 1, got {}", m.expert_intermediate);
  if (!(m.capacity_factor > 0))
    fail("model.moe.capacity_factor: expected > 0, got {}", m.capacity_factor);
  if (!(m.eval_capacity_factor > 0))
    fail("model.moe.eval_capacity_factor: expected > 0, got {}", m.eval_capacity_factor);
  if (m.min_capacity < 0) fail("model.moe.min_capacity: expected >= 0, got {}", m.min_capacity);
  if (!(m.bias_update_rate >= 0))
    fail("model.moe.bias_update_rate: expected >= 0, got {}", m.bias_update_rate);
  if (!(m.jitter >= 0 && m.jitter < 1))
    fail("model.moe.jitter: expected 0 <= jitter < 1, got {}", m.jitter);
  if (!(m.gate_scale > 0)) fail("model.moe.gate_scale: expected > 0, got {}", m.gate_scale);
}

void check_spec(const model_spec& s) {
  auto positive = [](int v, const char* what) {
    if (v < 1) fail("model: {} must be >= 1, got {}", what, v);
  };
  positive(s.vocab_size, "vocab_size");
  positive(s.hidden, "hidden size");
  positive(s.n_layer, "n_layer");
  positive(s.n_head, "n_head");
  positive(s.n_kv_head, "n_kv_head");
  positive(s.head_dim, "head_dim");
  positive(s.intermediate, "intermediate size");
  positive(s.max_positions, "max_positions");
  check_moe(s);
  // Widths are ints in the model and the kernels: a product past INT_MAX would wrap.
  const int64_t q = int64_t(s.n_head) * s.head_dim, kv = int64_t(s.n_kv_head) * s.head_dim;
  if (q + 2 * kv > INT_MAX)
    fail("model: n_head {} and n_kv_head {} of head_dim {} give {} attention columns, more than {}",
         s.n_head, s.n_kv_head, s.head_dim, q + 2 * kv, INT_MAX);
  if (2 * int64_t(s.intermediate) > INT_MAX)
    fail("model: intermediate size {} is more than {}", s.intermediate, INT_MAX / 2);
  if (const double n = count_params(s).total(); n > 0x1p48)
    fail(
        "model: {:.3g} parameters (vocab_size {}, hidden size {}, n_layer {}) are beyond any "
        "machine's memory",
        n, s.vocab_size, s.hidden, s.n_layer);
  if (s.n_head % s.n_kv_head)
    fail("model: n_head {} is not a multiple of n_kv_head {}", s.n_head, s.n_kv_head);
  if (s.arch == model_arch::gpt2) {
    if (s.n_kv_head != s.n_head) fail("model: gpt2 has no grouped-query attention (n_kv_head)");
    if (s.q_dim() != s.hidden)
      fail("model: gpt2 needs n_head * head_dim == hidden, got {} * {} != {}", s.n_head, s.head_dim,
           s.hidden);
  } else if (s.head_dim % 2) {
    fail("model: rotary embeddings need an even head_dim, got {}", s.head_dim);
  }
}

// As make_layout adds the tensors (runtime/model/layout.cpp); a test holds the two equal.
param_counts count_params(const model_spec& s) {
  // in double throughout: the int products of q_dim() and the rest may not fit yet
  const double C = s.hidden, V = s.vocab_size, I = s.intermediate;
  const double Q = double(s.n_head) * s.head_dim, D = Q + 2.0 * s.n_kv_head * s.head_dim;
  const bool gpt2 = s.arch == model_arch::gpt2, bias = gpt2 || s.attn_bias;
  param_counts p;
  p.vocab = V * C * (s.tied_head ? 1 : 2);
  p.positions = gpt2 ? double(s.max_positions) * C : 0;
  const double up = gpt2 ? I : 2 * I;
  const double mlp = C * up + I * C + (gpt2 ? I + C : 0);  // matrices + biases
  double block = (gpt2 ? 4 : 2) * C + C * D + Q * C;       // norms, matrices
  if (bias) block += D + C;                                // qkv, o
  for (int l = 0; l < s.n_layer; ++l) {
    p.blocks += block + (s.dense_mlp(l) ? mlp : 0);
    if (const int E = s.moe.experts_of(l)) {
      const double Ie = s.moe.expert_intermediate, Ue = gpt2 ? Ie : 2 * Ie;
      const double expert = C * Ue + Ie * C + (gpt2 ? Ie + C : 0);
      p.blocks += C * E + E * expert + (s.moe.router_bias() ? E : 0);  // router + experts
      p.experts += E * expert;
    }
  }
  p.final_norm = (gpt2 ? 2 : 1) * C + (s.value_head ? C : 0);
  return p;
}

std::vector<double> rope_inv_freq(const model_spec& c) {
  const rope_scaling& s = c.rope;
  std::vector<double> inv(static_cast<std::size_t>(c.head_dim / 2));
  for (std::size_t i = 0; i < inv.size(); ++i) {
    double f = std::pow(static_cast<double>(c.rope_theta), -2.0 * double(i) / c.head_dim);
    if (s.type == rope_scaling::kind::linear) {
      f /= s.factor;
    } else if (s.type == rope_scaling::kind::llama3) {
      // Wavelengths (in positions) against the pre-training context: those well inside it
      // (< old / high) keep their frequency, those beyond old / low are interpolated by factor,
      // and the band between blends the two linearly in old / wavelen.
      const double old_ctx = s.original_max_positions;
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > old_ctx / s.low_freq_factor) {
        f /= s.factor;
      } else if (wavelen >= old_ctx / s.high_freq_factor) {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[i] = f;
  }
  return inv;
}

}  // namespace zf
