#include "runtime/core/model_spec.hpp"

#include <cmath>
#include <numbers>

#include "runtime/core/error.hpp"

namespace zf {

const char* arch_name(model_arch a) {
  return a == model_arch::llama ? "llama" : "gpt2";
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
