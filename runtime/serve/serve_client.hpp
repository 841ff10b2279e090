#pragma once
// A blocking client of a serving backend: one request, its text streamed to a callback as the
// engine produces it. `zeroflow generate` and the sample at the end of training run through it,
// so every decode in zeroflow goes through the serving engine (one decode path).
#include <functional>
#include <string>

#include "runtime/serve/serving.hpp"

namespace zf::serve {

// Cuts r.prompt from the left so that prompt + max_tokens fits the backend's context (max_tokens
// is first capped at context - 1), submits it and waits for its last event. on_text gets each
// piece of choice 0's text. Returns the whole text; throws zf::error on a refused request or a
// failed generation.
std::string complete(completion_backend& b, completion_request r,
                     const std::function<void(const std::string&)>& on_text = {});

}  // namespace zf::serve
