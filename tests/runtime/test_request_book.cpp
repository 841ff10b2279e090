// The client side's book of requests in flight at a backend over the wire (runtime/serve/
// request_book): events reach their sink by the client's id until the request's last choice
// ends; when the backend is gone, every unfinished choice ends with the reason, and no more.
#include <doctest/doctest.h>

#include <map>

#include "runtime/serve/request_book.hpp"

using namespace zf::serve;

namespace {
struct seen {
  std::map<int, std::vector<finish_reason>> by_choice;
  std::map<int, std::string> error;
  event_sink sink() {
    return [this](const completion_event& e) {
      CHECK(e.request_id == 7);
      by_choice[e.index].push_back(e.finish);
      if (!e.error.empty()) error[e.index] = e.error;
    };
  }
};
completion_event ev(int index, finish_reason f) {
  completion_event e;
  e.request_id = 99;  // the backend's own id: the book relabels it
  e.index = index;
  e.finish = f;
  return e;
}
}  // namespace

TEST_CASE("request book: delivery by id, errors for the unfinished when the backend is gone") {
  request_book book;
  seen s;
  std::string gone;
  REQUIRE(book.open(7, 2, s.sink(), gone));
  book.deliver(7, ev(0, finish_reason::none));
  book.deliver(7, ev(0, finish_reason::stop));
  book.deliver(7, ev(5, finish_reason::stop));  // no such choice: ignored
  book.deliver(8, ev(0, finish_reason::none));  // no such request: ignored
  book.fail_all("engine (process 12) was killed");
  CHECK(s.by_choice[0] == std::vector<finish_reason>{finish_reason::none, finish_reason::stop});
  CHECK(s.by_choice[1] == std::vector<finish_reason>{finish_reason::error});  // only the open one
  CHECK(s.error[1] == "engine (process 12) was killed");
  book.deliver(7, ev(1, finish_reason::stop));  // after its final event: nothing reaches it
  CHECK(s.by_choice[1].size() == 1);
  // later requests are refused with the reason; a request it ended counts as accepted
  seen t;
  CHECK(!book.open(9, 1, t.sink(), gone));
  CHECK(gone == "engine (process 12) was killed");
  CHECK(book.gone() == gone);
  CHECK(!book.forget(7));
}

TEST_CASE("request book: a refused request is forgotten, a finished one leaves the book") {
  request_book book;
  seen s;
  std::string gone;
  REQUIRE(book.open(7, 1, s.sink(), gone));
  CHECK(book.forget(7));
  REQUIRE(book.open(7, 1, s.sink(), gone));
  book.deliver(7, ev(0, finish_reason::length));
  CHECK(!book.forget(7));  // done: not in the book any more
  book.fail_all("gone");
  CHECK(s.by_choice[0] == std::vector<finish_reason>{finish_reason::length});
}
