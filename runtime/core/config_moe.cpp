// The `model.moe.*` keys (runtime/core/config.hpp moe_config): declared here through the same
// schema as the other sections, with the conversions to and from the model spec's moe_spec.
#include <algorithm>

#include "runtime/core/config_keys.hpp"
#include "runtime/core/error.hpp"

namespace zf::config_detail {

std::vector<key> moe_keys() {
  return {
      ZF_INT("model.moe.num_experts", model.moe.num_experts, 0, 65536,
             "experts per MoE layer; 0 = a dense model"),
      ZF_INT("model.moe.top_k", model.moe.top_k, 1, 64, "experts each token is routed to"),
      ZF_INT("model.moe.interval", model.moe.interval, 1, 1024,
             "MoE every interval-th layer (2: layers 1, 3, 5, ...), unless model.moe.layers"),
      ZF_INTS("model.moe.layers", model.moe.layers, 0, 1 << 16,
              "the MoE layers' ids; [] = by model.moe.interval"),
      ZF_INTS("model.moe.layer_experts", model.moe.layer_experts, 1, 65536,
              "experts of each MoE layer in order (PR-MoE's pyramid); [] = num_experts each"),
      ZF_INT("model.moe.expert_intermediate", model.moe.expert_intermediate, 0, 1 << 20,
             "an expert's MLP width; 0 = model.intermediate"),
      ZF_NUM("model.moe.capacity_factor", model.moe.capacity_factor, -1e9, 1e6,
             "training: an expert takes at most factor * tokens * top_k / experts tokens"),
      ZF_NUM("model.moe.eval_capacity_factor", model.moe.eval_capacity_factor, -1e9, 1e6,
             "the same for evaluation (score, RL and serving route dropless)"),
      ZF_INT("model.moe.min_capacity", model.moe.min_capacity, 0, 1 << 30,
             "the capacity is at least this many tokens"),
      ZF_BOOL("model.moe.dropless", model.moe.dropless,
              "no capacity: every token reaches its top_k experts"),
      ZF_ENUM("model.moe.router", model.moe.router, "router scores: softmax or sigmoid", "softmax",
              "sigmoid"),
      ZF_BOOL("model.moe.norm_topk", model.moe.norm_topk,
              "top_k > 1: the chosen experts' gates are renormalised to sum 1"),
      ZF_BOOL("model.moe.residual", model.moe.residual,
              "PR-MoE: a dense MLP (model.intermediate wide) beside the experts"),
      ZF_NUM("model.moe.aux_loss_coef", model.moe.aux_loss_coef, 0, 1e6,
             "Switch load-balancing loss coefficient (per MoE layer)"),
      ZF_NUM("model.moe.z_loss_coef", model.moe.z_loss_coef, 0, 1e6,
             "router z-loss coefficient (per MoE layer)"),
      ZF_NUM("model.moe.bias_update_rate", model.moe.bias_update_rate, 0, 1e6,
             "DeepSeek-V3 auxiliary-loss-free balancing: a per-expert routing bias moved by this "
             "each step toward equal load (0 = none)"),
      ZF_NUM("model.moe.jitter", model.moe.jitter, -1e9, 1e9,
             "training: the router reads its input times U(1 - jitter, 1 + jitter) (Switch)"),
      ZF_NUM("model.moe.gate_scale", model.moe.gate_scale, -1e9, 1e9,
             "the experts' gates times this in the combine (DeepSeek's routed_scaling_factor)"),
      ZF_INT("train.expert_parallel", train.expert_parallel, 1, 4096,
             "MoE: ranks per expert group (each computes experts / this of every MoE layer)"),
  };
}

namespace {

// The MoE layer ids of m, ascending; checks model.moe.layers and layer_experts against n_layer.
std::vector<int> moe_layers(const model_config& m) {
  std::vector<int> ids;
  if (m.moe.layers.empty()) {
    for (int l = 0; l < m.n_layer; ++l)
      if ((l + 1) % m.moe.interval == 0) ids.push_back(l);
  } else {
    for (int64_t l : m.moe.layers) {
      if (l < 0 || l >= m.n_layer)
        fail("model.moe.layers: layer {} is not one of the model's layers 0..{}", l, m.n_layer - 1);
      ids.push_back(static_cast<int>(l));
    }
    std::sort(ids.begin(), ids.end());
    if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
      fail("model.moe.layers: a layer is listed twice");
  }
  if (ids.empty())
    fail(
        "model.moe: num_experts {} but no layer is an MoE layer (model.moe.interval {} > "
        "model.n_layer {})",
        m.moe.num_experts, m.moe.interval, m.n_layer);
  if (!m.moe.layer_experts.empty() && m.moe.layer_experts.size() != ids.size())
    fail("model.moe.layer_experts: expected one count per MoE layer ({}), got {}", ids.size(),
         m.moe.layer_experts.size());
  return ids;
}

}  // namespace

void moe_spec_of(const model_config& m, int intermediate, moe_spec& out) {
  out = moe_spec{};
  const moe_config& c = m.moe;
  out.top_k = c.top_k;
  out.capacity_factor = c.capacity_factor;
  out.eval_capacity_factor = c.eval_capacity_factor;
  out.min_capacity = c.min_capacity;
  out.dropless = c.dropless;
  out.router = c.router == "sigmoid" ? moe_router::sigmoid : moe_router::softmax;
  out.norm_topk = c.norm_topk;
  out.residual = c.residual;
  out.aux_loss_coef = c.aux_loss_coef;
  out.z_loss_coef = c.z_loss_coef;
  out.bias_update_rate = c.bias_update_rate;
  out.jitter = c.jitter;
  out.gate_scale = c.gate_scale;
  if (c.num_experts == 0) return;
  out.expert_intermediate = c.expert_intermediate ? c.expert_intermediate : intermediate;
  out.experts.assign(static_cast<std::size_t>(m.n_layer), 0);
  const std::vector<int> ids = moe_layers(m);
  for (std::size_t i = 0; i < ids.size(); ++i)
    out.experts[static_cast<std::size_t>(ids[i])] =
        c.layer_experts.empty() ? c.num_experts : static_cast<int>(c.layer_experts[i]);
}

void moe_config_of(const moe_spec& s, int intermediate, moe_config& out) {
  out = moe_config{};
  out.top_k = s.top_k;
  out.capacity_factor = s.capacity_factor;
  out.eval_capacity_factor = s.eval_capacity_factor;
  out.min_capacity = s.min_capacity;
  out.dropless = s.dropless;
  out.router = s.router == moe_router::sigmoid ? "sigmoid" : "softmax";
  out.norm_topk = s.norm_topk;
  out.residual = s.residual;
  out.aux_loss_coef = s.aux_loss_coef;
  out.z_loss_coef = s.z_loss_coef;
  out.bias_update_rate = s.bias_update_rate;
  out.jitter = s.jitter;
  out.gate_scale = s.gate_scale;
  if (!s.any()) return;
  out.num_experts = s.max_experts();
  out.expert_intermediate = s.expert_intermediate == intermediate ? 0 : s.expert_intermediate;
  bool uniform = true;
  for (std::size_t l = 0; l < s.experts.size(); ++l) {
    if (s.experts[l] == 0) continue;
    out.layers.push_back(static_cast<int64_t>(l));
    out.layer_experts.push_back(s.experts[l]);
    uniform = uniform && s.experts[l] == out.num_experts;
  }
  if (uniform) out.layer_experts.clear();
}

void validate_moe(const run_config& c) {
  const model_config& m = c.model;
  const int ep = c.train.expert_parallel;
  if (m.moe.num_experts == 0) {
    if (ep != 1)
      fail(
          "train.expert_parallel: expected 1 for a dense model (model.moe.num_experts = 0), got {}",
          ep);
    return;
  }
  model_spec s;
  s.n_layer = m.n_layer;
  moe_spec_of(m, 1, s.moe);  // the layer checks (named keys); intermediate resolved by spec_of
  check_moe(s);
  for (int l = 0; l < m.n_layer; ++l)
    if (const int E = s.moe.experts_of(l); E % ep)
      fail(
          "train.expert_parallel: expected a divisor of every MoE layer's experts (layer {} has "
          "{}), "
          "got {}",
          l, E, ep);
}

}  // namespace zf::config_detail
