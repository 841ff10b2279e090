#pragma once
// One exception type for every user-facing failure: the message names the file, key or request
// that was wrong, what was expected and what was found. The CLI prints what() and exits non-zero.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace zf {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace zf
