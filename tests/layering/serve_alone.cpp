// Links against the serving layers only (zf_api -> serve, text, model, core, kernels): if serve
// or api used training or the collectives (train, dist, Gloo), this program would not link.
// Running it serves one greedy request from a random tiny GPT-2 through the engine core.
#include <iostream>

#include "runtime/core/config.hpp"
#include "runtime/serve/engine_core.hpp"
#include "runtime/api/openai.hpp"

int main() {
  zf::model_config m;
  m.n_layer = 1, m.n_head = 2, m.n_embd = 16, m.n_positions = 32, m.vocab_size = 300;
  const zf::model_spec spec = zf::spec_of(m);
  std::vector<float> flat(zf::make_layout(spec).total, 0.01f);
  auto w = std::make_shared<const zf::lm_weights>(zf::copy_lm_weights(spec, flat.data()));
  const zf::tokenizer tok = zf::tokenizer::load_gpt2(ZF_DATA_DIR "/gpt2");
  zf::engine_core core(w, tok, zf::engine_core_options{});
  std::cout << "serve layers link alone: " << zf::openai::system_fingerprint(core.weights_version())
            << "\n";
  return 0;
}
