// The model spec a run's `model.*` keys describe, and back (runtime/core/config.hpp spec_of,
// config_of): kept beside the schema (config.cpp) but apart from its parsing.
#include "runtime/core/config_keys.hpp"
#include "runtime/core/model_spec.hpp"

namespace zf {
using namespace config_detail;

model_spec spec_of(const model_config& m) {
  model_spec s;
  s.arch = m.arch == "llama" ? model_arch::llama : model_arch::gpt2;
  s.vocab_size = m.vocab_size;
  s.hidden = m.n_embd;
  s.n_layer = m.n_layer;
  s.n_head = m.n_head;
  s.n_kv_head = m.n_kv_head ? m.n_kv_head : m.n_head;
  s.head_dim = m.head_dim ? m.head_dim : m.n_embd / m.n_head;
  const bool llama = s.arch == model_arch::llama;
  s.intermediate = m.intermediate ? m.intermediate
                   : llama        ? (8 * m.n_embd / 3 + 31) / 32 * 32
                                  : 4 * m.n_embd;
  s.max_positions = m.n_positions;
  s.norm_eps = static_cast<float>(m.norm_eps);
  s.rope_theta = static_cast<float>(m.rope_theta);
  s.rope.type = m.rope_type == "linear"   ? rope_scaling::kind::linear
                : m.rope_type == "llama3" ? rope_scaling::kind::llama3
                                          : rope_scaling::kind::none;
  s.rope.factor = m.rope_factor;
  s.rope.low_freq_factor = m.rope_low_freq_factor;
  s.rope.high_freq_factor = m.rope_high_freq_factor;
  s.rope.original_max_positions = m.rope_original_max_positions;
  s.tied_head = m.tied_head;
  s.attn_bias = m.attn_bias;
  s.value_head = m.value_head;
  s.eos_id = m.vocab_size > 50256 ? 50256 : -1;  // GPT-2's <|endoftext|> (the gpt2 tokenizer)
  moe_spec_of(m, s.intermediate, s.moe);
  return s;
}

model_config config_of(const model_spec& s) {
  model_config m;
  m.arch = arch_name(s.arch);
  m.n_layer = s.n_layer;
  m.n_head = s.n_head;
  m.n_embd = s.hidden;
  m.n_positions = s.max_positions;
  m.vocab_size = s.vocab_size;
  m.n_kv_head = s.n_kv_head;
  m.head_dim = s.head_dim;
  m.intermediate = s.intermediate;
  m.norm_eps = s.norm_eps;
  m.rope_theta = s.rope_theta;
  m.rope_type = s.rope.type == rope_scaling::kind::linear   ? "linear"
                : s.rope.type == rope_scaling::kind::llama3 ? "llama3"
                                                            : "none";
  m.rope_factor = s.rope.factor;
  m.rope_low_freq_factor = s.rope.low_freq_factor;
  m.rope_high_freq_factor = s.rope.high_freq_factor;
  m.rope_original_max_positions = s.rope.original_max_positions;
  m.tied_head = s.tied_head;
  m.attn_bias = s.attn_bias;
  m.value_head = s.value_head;
  moe_config_of(s.moe, s.intermediate, m.moe);
  return m;
}

}  // namespace zf
