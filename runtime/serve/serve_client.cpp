#include "runtime/serve/serve_client.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "runtime/core/error.hpp"

namespace zf::serve {

std::string complete(completion_backend& b, completion_request r,
                     const std::function<void(const std::string&)>& on_text) {
  if (r.prompt.empty()) fail("generate: the prompt is empty");
  const int ctx = b.context_length();
  r.max_tokens = std::min(r.max_tokens, ctx - 1);
  if (static_cast<int>(r.prompt.size()) + r.max_tokens > ctx)  // keep the prompt's end
    r.prompt.erase(r.prompt.begin(), r.prompt.end() - (ctx - r.max_tokens));
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error, text;
  auto s = b.submit(std::move(r), [&](const completion_event& e) {
    if (e.index == 0) {
      if (on_text && !e.text.empty()) on_text(e.text);
      text += e.text;
    }
    if (e.finish == finish_reason::none) return;
    std::lock_guard lk(mu);
    done = true;
    if (e.finish == finish_reason::error) error = e.error;
    cv.notify_all();
  });
  if (s.status != 200) fail("generate: {}", s.message);
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return done; });
  if (!error.empty()) fail("generate: {}", error);
  return text;
}

}  // namespace zf::serve
