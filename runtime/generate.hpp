#pragma once
// Text generation with the KV cache: prefill the prompt once, then one decode step per token.
#include <functional>
#include <string>
#include <string_view>

#include "runtime/model.hpp"
#include "runtime/sampling.hpp"
#include "runtime/tokenizer.hpp"

namespace zf {

struct generate_options {
  int max_tokens = 64;
  sampling_params sampling;
  bool stop_at_eot = true;
};

// Calls on_text with the bytes of each new token as it is produced; returns the whole
// continuation. The prompt is cut from the left to fit the context.
std::string generate(gpt2_model& model, const tokenizer& tok, std::string_view prompt,
                     const generate_options& o,
                     const std::function<void(const std::string&)>& on_text = {});

}  // namespace zf
