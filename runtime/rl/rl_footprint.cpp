#include "runtime/rl/rl_footprint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>

#include "kernels/paged_attention.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/memory.hpp"
#include "runtime/core/model_spec.hpp"
#include "runtime/model/model.hpp"

namespace zf::rl {
namespace {

constexpr double kF = sizeof(float);
// engine_core_options::kv_budget_bytes, which the RL engine leaves at its default.
constexpr double kKvBudget = double(std::size_t{1} << 30);

// arena::take pads every slice to 16 floats (64 bytes).
double pad(double n) {
  return std::ceil(n / 16) * 16;
}

// The floats paged_model's constructor takes into its scratch arena (runtime/model/model_paged):
// per row x, ln [C], qkv [D], att [Q], mlp [U] (+ act [I] for Llama's SwiGLU), the attention
// scratch of the worst chunk (max_rows queries at the end of a full context), a [n_head x
// max_positions] decode row per thread, then lnf [C] and logits [V] per sampled row, and the RoPE
// cos | sin tables (Llama).
double paged_scratch_floats(const model_spec& s, int max_rows, int max_logits, int threads) {
  const bool llama = s.arch == model_arch::llama;
  const double R = max_rows, L = max_logits, C = s.hidden;
  kernels::paged_shape worst;
  worst.tq = std::min(max_rows, s.max_positions);
  worst.start = s.max_positions - worst.tq;
  worst.n_head = s.n_head;
  worst.n_kv_head = s.n_kv_head;
  worst.head_dim = s.head_dim;
  const double rope = llama ? double(s.max_positions) * (s.head_dim / 2) : 0;
  double f = 2 * pad(R * C) + pad(R * s.qkv_dim()) + pad(R * s.q_dim()) + pad(R * s.up_dim());
  if (llama) f += pad(R * s.intermediate);
  f += pad(double(kernels::paged_attention_scratch(worst)));
  f += pad(double(s.n_head) * s.max_positions * std::max(1, threads));
  f += pad(L * C) + pad(L * s.vocab_size);
  if (llama) f += 2 * pad(rope);
  return f;
}

// The rollout engine's max_seqs: pipelines/rl_run raises engine.max_seqs to a whole batch.
int rollout_max_seqs(const run_config& cfg) {
  return std::max(cfg.engine.max_seqs, cfg.rlhf.prompts_per_step * cfg.rlhf.group_size);
}

// "118592" -> "119 K": parameter counts for the message.
std::string count_text(double n) {
  if (n < 1e3) return fmt::format("{}", n);
  if (n < 1e6) return fmt::format("{:.3g} K", n / 1e3);
  if (n < 1e9) return fmt::format("{:.3g} M", n / 1e6);
  return fmt::format("{:.3g} B", n / 1e9);
}

// Parts of a role's keys, the largest part first, joined: "what makes this role large" reads
// left to right.
std::string join_parts(std::vector<std::pair<double, std::string>> parts) {
  std::stable_sort(parts.begin(), parts.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string out;
  for (auto& [bytes, text] : parts) {
    if (bytes <= 0 || text.empty()) continue;
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

}  // namespace

double rl_footprint::total() const {
  double sum = 0;
  for (const role_footprint& r : roles) sum += r.total();
  return sum;
}

const role_footprint* rl_footprint::find(const std::string& role) const {
  for (const role_footprint& r : roles)
    if (r.role == role) return &r;
  return nullptr;
}

double kl_coef_in_effect(const rlhf_config& r) {
  if (r.kl_coef >= 0) return r.kl_coef;
  return r.algorithm == "grpo" ? 0.04 : r.algorithm == "rloo" ? 0.05 : 0.1;
}

// engine_core.cpp's blocks_for, on the RL engine's options.
int rollout_kv_blocks(const run_config& cfg) {
  if (cfg.engine.kv_blocks > 0) return cfg.engine.kv_blocks;
  const model_spec s = spec_of(cfg.model);
  const double bs = cfg.engine.block_size;
  const double per_ctx = std::ceil(s.max_positions / bs);
  const double block_bytes = 2.0 * s.n_layer * bs * s.kv_dim() * kF;
  const double want = per_ctx * rollout_max_seqs(cfg);
  const double cap = std::max(per_ctx, std::floor(kKvBudget / block_bytes));
  return static_cast<int>(std::min(want, cap));
}

rl_footprint estimate_rl_footprint(const run_config& cfg, int prompt_tokens,
                                   bool has_reward_model) {
  const rlhf_config& r = cfg.rlhf;
  const model_config& m = cfg.model;
  if (prompt_tokens < 1) fail("rl footprint: prompt_tokens must be >= 1, got {}", prompt_tokens);
  const model_spec spec = spec_of(m);
  const double P = count_params(spec).total(), C = spec.hidden;
  const int S = r.prompts_per_step * r.group_size;
  const int b = r.micro_batch > 0 ? std::min(r.micro_batch, S) : S;
  const int t = prompt_tokens + r.max_new_tokens - 1;
  const double bt = double(b) * t, N = double(S) * r.max_new_tokens;
  // the same for every role: [b, t] (each role runs at train.precision, bf16 keeping copies)
  const double acts = (activation_floats(spec, b, t) +
                       (cfg.train.precision == "bf16" ? operand16_floats(spec, b, t) : 0.0)) *
                      kF;

  // The keys, with their values: in full for the policy, which every run has, and short for the
  // roles that repeat its sizes, so the message lists five roles without repeating itself.
  const std::string model_full =
      fmt::format("model.n_layer = {}, model.n_embd = {}, model.vocab_size = {}: {} parameters",
                  m.n_layer, m.n_embd, m.vocab_size, count_text(P));
  const std::string model_short = fmt::format("model.*: {} parameters", count_text(P));
  const bool split = r.micro_batch > 0 && r.micro_batch < S;
  const std::string batch_full =
      (split ? fmt::format("rlhf.micro_batch = {} sequences", b)
             : fmt::format("rlhf.prompts_per_step x rlhf.group_size = {} x {} = {} sequences at "
                           "once (rlhf.micro_batch = {})",
                           r.prompts_per_step, r.group_size, S, r.micro_batch)) +
      fmt::format(" of {} tokens (longest prompt {} + rlhf.max_new_tokens = {}, less 1)", t,
                  prompt_tokens, r.max_new_tokens);
  const std::string batch_short =
      fmt::format("{} = {} x {} tokens",
                  split ? "rlhf.micro_batch" : "rlhf.prompts_per_step x rlhf.group_size", b, t);

  rl_footprint fp;
  {
    // train.ranks R thread ranks (runtime/rl/policy_group): a replica, full gradients and a
    // micro-batch's activations each; AdamW moments on every rank (zero.stage 0) or split
    // among them, with the reduce-scattered gradient slices (stage 1); a checkpoint gathers the
    // whole state into a transient copy.
    const double R = std::max(1, cfg.train.ranks);
    const bool sharded = R > 1 && cfg.zero.stage >= 1;
    role_footprint p;
    p.role = "policy";
    p.weights = R * P * kF;
    p.grads = (R + (sharded ? 1 : 0)) * P * kF;
    p.optimizer = (sharded ? 2 : 2 * R) * P * kF;
    p.activations = R * acts;
    p.other = (R * 6 * bt + 5 * N + (r.ema > 0 ? P : 0) + (R > 1 ? 3 * P : 0)) * kF;
    const std::string ranks =
        R > 1 ? fmt::format("; train.ranks = {}, zero.stage = {}", cfg.train.ranks, cfg.zero.stage)
              : "";
    p.keys = join_parts({{p.weights + p.grads + p.optimizer, model_full + ranks},
                         {p.activations + p.other, batch_full}});
    fp.roles.push_back(std::move(p));
  }
  if (const double kl = kl_coef_in_effect(r); kl > 0) {
    role_footprint p;
    p.role = "reference";
    p.weights = P * kF;
    p.activations = acts;
    p.keys = join_parts({{p.weights, model_short}, {p.activations, batch_short}}) +
             (r.kl_coef >= 0 ? fmt::format("; rlhf.kl_coef = {} (0: none)", kl)
                             : fmt::format("; rlhf.kl_coef: {}'s {} (0: none)", r.algorithm, kl));
    fp.roles.push_back(std::move(p));
  }
  if (r.algorithm == "ppo") {
    role_footprint p;
    p.role = "critic";
    p.weights = (P + C) * kF;
    p.grads = (P + C) * kF;
    p.optimizer = 2 * (P + C) * kF;
    p.activations = acts;
    p.other = 3 * N * kF;
    p.keys = join_parts(
        {{p.weights + p.grads + p.optimizer, model_short}, {p.activations + p.other, batch_short}});
    fp.roles.push_back(std::move(p));
  }
  if (has_reward_model) {
    role_footprint p;
    p.role = "reward model";
    p.weights = (P + C) * kF;
    p.activations = acts;
    p.keys = join_parts(
        {{p.weights, "rlhf.reward_model, " + model_short}, {p.activations, batch_short}});
    fp.roles.push_back(std::move(p));
  }
  {
    const engine_config& e = cfg.engine;
    const int max_seqs = rollout_max_seqs(cfg), blocks = rollout_kv_blocks(cfg);
    const int max_rows =
        e.policy == "static_batch" ? std::max(e.token_budget, spec.max_positions) : e.token_budget;
    role_footprint p;
    p.role = "rollout engine";
    // Engines of this process share each version's weights; one in a process of its own holds
    // two more (the version it serves and the buffer the next one arrives in). Each engine has
    // its own KV pool and scratch.
    const double n = r.engines;
    const bool own_process = r.rollout_placement == "process";
    p.weights = ((r.overlap + 2) + (own_process ? 2 * n : 0)) * P * kF;
    p.kv = n * 2.0 * spec.n_layer * blocks * e.block_size * spec.kv_dim() * kF;
    p.other =
        n * 2 * paged_scratch_floats(spec, max_rows, std::max(1, max_seqs), r.engine_threads) * kF;
    std::string kv_keys;
    if (e.kv_blocks > 0) {
      kv_keys =
          fmt::format("engine.kv_blocks = {} of engine.block_size = {}", e.kv_blocks, e.block_size);
    } else {
      const bool capped = blocks < std::ceil(double(spec.max_positions) / e.block_size) * max_seqs;
      kv_keys = fmt::format(
          "engine.kv_blocks = 0: {} blocks of engine.block_size = {} for max(engine.max_seqs = "
          "{}, rlhf.prompts_per_step x rlhf.group_size = {}) contexts of model.n_positions = {}{}",
          blocks, e.block_size, e.max_seqs, S, m.n_positions, capped ? ", capped at 1 GiB" : "");
    }
    if (r.engines > 1) kv_keys = fmt::format("rlhf.engines = {} x ", r.engines) + kv_keys;
    p.keys = join_parts(
        {{p.weights, fmt::format("rlhf.overlap = {}: {} weight copies{}", r.overlap, r.overlap + 2,
                                 own_process ? fmt::format(", + 2 in each of rlhf.engines = {} "
                                                           "engine processes",
                                                           r.engines)
                                             : "")},
         {p.kv, kv_keys},
         {p.other, fmt::format("engine.token_budget = {} rows, {} x model.vocab_size logits",
                               max_rows, max_seqs)}});
    fp.roles.push_back(std::move(p));
  }
  return fp;
}

void check_rl_footprint(const rl_footprint& fp, std::uint64_t available) {
  const double total = fp.total();
  if (total <= double(available)) return;
  std::vector<const role_footprint*> order;
  for (const role_footprint& r : fp.roles) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(),
                   [](const auto* a, const auto* b) { return a->total() > b->total(); });
  std::string roles;
  for (const role_footprint* r : order) {
    if (!roles.empty()) roles += ", ";
    roles += fmt::format("{} {}", r->role, bytes_text(r->total()));
    if (!r->keys.empty()) roles += " (" + r->keys + ")";
  }
  fail("rl: the run needs {}, this machine has {}: {}; make the largest of these smaller",
       bytes_text(total), bytes_text(double(available)), roles);
}

}  // namespace zf::rl
