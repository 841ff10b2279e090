#pragma once
// The requests a client has in flight at a backend it reaches over the wire (actors/
// engine_client: an engine in another process), by the client's own id, with their sinks; and
// whether that backend is gone. Events arrive with the client's id and reach their sink; when the
// backend dies, fail_all ends every unfinished choice with an error saying why, and later opens
// are refused with it. Sinks run under the book's lock, so no event reaches a request after the
// final one fail_all gave it (its receiver may be gone by then); a sink must not block.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/serve/serving.hpp"

namespace zf::serve {

class request_book {
 public:
  // Registers request `id` of `choices` choices; false (and why in `gone`) once the backend is
  // gone.
  bool open(uint64_t id, int choices, event_sink sink, std::string& gone);
  // Forgets a request the backend refused; false when fail_all ended it already (its sink has
  // been called, so it counts as accepted).
  bool forget(uint64_t id);
  // e for request id (relabelled with it); an unknown id or choice is ignored.
  void deliver(uint64_t id, completion_event e);
  void fail_all(const std::string& why);
  std::string gone() const;  // "" while the backend serves

 private:
  struct request {
    event_sink sink;
    std::vector<bool> ended;  // per choice
  };
  mutable std::mutex mu_;
  std::map<uint64_t, request> open_;
  std::string gone_;
};

}  // namespace zf::serve
