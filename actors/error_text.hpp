#pragma once
// An actor whose handler throws (a collective that failed: a peer died or stopped, comm's
// zf::error naming the limit and its key) answers the request with the exception's text, not
// CAF's bare runtime_error, so the trainer's final error line and run.json say what happened.
#include <caf/all.hpp>
#include <exception>
#include <string>

namespace zf::actors {

inline void answer_exceptions_with_text(caf::scheduled_actor* self) {
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& x) -> caf::error {
    try {
      std::rethrow_exception(x);
    } catch (const std::exception& e) {
      return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
    } catch (...) {
      return caf::make_error(caf::sec::runtime_error);
    }
  });
}

}  // namespace zf::actors
