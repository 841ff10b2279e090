#include "runtime/generate.hpp"

#include <vector>

#include "runtime/error.hpp"

namespace zf {

std::string generate(gpt2_model& model, const tokenizer& tok, std::string_view prompt,
                     const generate_options& o,
                     const std::function<void(const std::string&)>& on_text) {
  const int V = model.config().vocab_size, P = model.config().n_positions;
  std::vector<int> ids = tok.encode(prompt);
  if (ids.empty()) ids.push_back(tok.eot());  // an empty prompt starts a fresh document
  int budget = std::min(o.max_tokens, P - 1);
  if (static_cast<int>(ids.size()) + budget > P) ids.erase(ids.begin(), ids.end() - (P - budget));
  for (int id : ids)
    if (id >= V) fail("prompt token {} is outside the model's vocabulary ({})", id, V);
  kv_cache cache = model.make_cache();
  std::vector<float> logits(V);
  sampler s(o.sampling);
  model.decode(ids.data(), static_cast<int>(ids.size()), cache, logits.data());
  std::string out;
  for (int i = 0; i < budget; ++i) {
    int next = s.sample(logits.data(), V);
    if (o.stop_at_eot && next == tok.eot()) break;
    const std::string& piece = tok.token_bytes(next);
    out += piece;
    if (on_text) on_text(piece);
    if (i + 1 < budget) model.decode(&next, 1, cache, logits.data());
  }
  return out;
}

}  // namespace zf
