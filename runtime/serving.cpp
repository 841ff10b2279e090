#include "runtime/serving.hpp"

#include <future>

#include "runtime/error.hpp"

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

namespace {
weights_result not_supported(const completion_backend& b) {
  return {501, b.weights_version(), "this backend cannot update its weights"};
}
}  // namespace

void completion_backend::update_weights_async(std::shared_ptr<const lm_weights>,
                                              std::optional<uint64_t>, weights_done done) {
  if (done) done(not_supported(*this));
}

void completion_backend::update_weights_from_disk(std::string, std::optional<uint64_t>,
                                                  weights_done done) {
  if (done) done(not_supported(*this));
}

uint64_t completion_backend::update_weights(uint64_t version,
                                            std::shared_ptr<const lm_weights> weights) {
  auto result = std::make_shared<std::promise<weights_result>>();
  auto ready = result->get_future();
  update_weights_async(std::move(weights), version,
                       [result](const weights_result& r) { result->set_value(r); });
  const weights_result r = ready.get();
  if (r.status != 200) fail("{}", r.message);
  return r.version;
}

}  // namespace zf::serve
