#include "runtime/serving.hpp"

namespace zf::serve {

const char* to_string(finish_reason r) {
  switch (r) {
    case finish_reason::stop:
      return "stop";
    case finish_reason::length:
      return "length";
    case finish_reason::cancelled:
      return "cancelled";
    case finish_reason::error:
      return "error";
    case finish_reason::none:
      break;
  }
  return "";
}

}  // namespace zf::serve
