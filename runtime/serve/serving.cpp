#include "runtime/serve/serving.hpp"

#include <future>

#include "runtime/core/error.hpp"

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

std::optional<submit_result> inflight_limit::admit() {
  if (n_.fetch_add(1) < max_) return std::nullopt;
  n_.fetch_sub(1);
  return submit_result{0, 429, 1, "the server is busy: too many requests in flight; retry later"};
}

event_sink inflight_limit::releasing(int choices, event_sink sink) {
  auto left = std::make_shared<int>(choices);
  return [this, left, sink = std::move(sink)](const completion_event& e) {
    if (e.finish != finish_reason::none && --*left == 0) n_.fetch_sub(1);
    if (sink) sink(e);
  };
}

std::string inflight_limit::metrics_text() const {
  return "# HELP zeroflow_requests_in_flight Requests accepted and not finished.\n"
         "# TYPE zeroflow_requests_in_flight gauge\nzeroflow_requests_in_flight " +
         std::to_string(n_.load()) + "\n";
}

}  // namespace zf::serve
