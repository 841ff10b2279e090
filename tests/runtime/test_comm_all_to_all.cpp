// Uneven all_to_all (MoE expert parallelism) on every backend: the local group on 1 to 4 threads
// and Gloo groups of 2 and 3 ranks as threads of this process, against closed-form answers with
// zero counts (a rank that sends nothing, all zero), a round trip back to the original buffer,
// byte accounting, the router, and the errors a caller sees (counts that disagree between ranks,
// bad arguments, a peer that never enters).
// The float rank q sends to rank r at position i is q*1e6 + r*1e4 + i (exact in float for the
// sizes used), so a piece from the wrong rank, for the wrong rank or at the wrong offset shows as
// a wrong number.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "comm_groups.hpp"
#include "runtime/dist/comm.hpp"
#include "test_util.hpp"

namespace {

using namespace zf::comm;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;
using group = zf::testing::comm_group;
using zf::testing::make_gloo_group;
using zf::testing::on_ranks;
using zf::testing::quick_options;
// How many floats rank q sends to rank r in a world of w.
using counts_fn = std::function<std::size_t(int q, int r, int w)>;

float val(int from, int to, std::size_t i) {
  return static_cast<float>(from * 1'000'000 + to * 10'000 + static_cast<int>(i));
}

std::size_t total(const std::vector<std::size_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::size_t{0});
}

// Count patterns, each with zeros somewhere: mixed small pieces; rank 0 sends nothing but
// receives (larger pieces, several thousand floats); only the piece to itself; all zero.
const std::vector<std::pair<const char*, counts_fn>>& patterns() {
  static const std::vector<std::pair<const char*, counts_fn>> p = {
      {"mixed", [](int q, int r, int w) { return std::size_t((q * 3 + r * 5 + w) % 4); }},
      {"rank 0 silent",
       [](int q, int r, int) { return q == 0 ? std::size_t{0} : std::size_t(q + r) * 700; }},
      {"self only", [](int q, int r, int) { return q == r ? std::size_t(q + 2) : std::size_t{0}; }},
      {"all zero", [](int, int, int) { return std::size_t{0}; }},
  };
  return p;
}

// Records the first failed check in `failed` (0 = none) and goes on: every rank must make the
// same calls whatever it found, or a wrong value would leave the other ranks waiting forever.
#define EXPECT_OR_NOTE(cond, code)                                                   \
  do {                                                                               \
    if (!(cond) && !failed) {                                                        \
      std::fprintf(stderr, "rank %d: check %d failed: %s\n", c.rank(), code, #cond); \
      failed = code;                                                                 \
    }                                                                                \
  } while (0)

// One all_to_all with counts `n`, every received float checked, then the reverse all_to_all
// (send and recv counts swapped) must give back the original send buffer bit for bit; each call
// adds to bytes_sent what this rank sent to the others in it. 0 = all passed.
int check_pattern(communicator& c, const counts_fn& n) {
  int failed = 0;
  const int w = c.world(), me = c.rank();
  std::vector<std::size_t> send(static_cast<std::size_t>(w)), recv(send.size());
  for (int r = 0; r < w; ++r) {
    send[static_cast<std::size_t>(r)] = n(me, r, w);
    recv[static_cast<std::size_t>(r)] = n(r, me, w);
  }
  std::vector<float> in, out(total(recv), -1.0f), back(total(send), -1.0f);
  for (int r = 0; r < w; ++r)
    for (std::size_t i = 0; i < send[static_cast<std::size_t>(r)]; ++i) in.push_back(val(me, r, i));
  // Floats to the others: what bytes_sent must count (the piece to itself is a local copy).
  auto to_others = [&](const std::vector<std::size_t>& counts) {
    std::uint64_t b = 0;
    for (int r = 0; r < w; ++r)
      if (r != me) b += counts[static_cast<std::size_t>(r)] * sizeof(float);
    return b;
  };
  std::uint64_t before = c.bytes_sent();

  // Empty vectors have null data(): that is part of what the all-zero pattern checks.
  c.all_to_all(in.data(), send, out.data(), recv);
  std::size_t at = 0;
  for (int q = 0; q < w; ++q)
    for (std::size_t i = 0; i < recv[static_cast<std::size_t>(q)]; ++i, ++at)
      EXPECT_OR_NOTE(out[at] == val(q, me, i), 1);
  EXPECT_OR_NOTE(c.bytes_sent() - before == to_others(send), 3);

  before = c.bytes_sent();
  c.all_to_all(out.data(), recv, back.data(), send);
  EXPECT_OR_NOTE(back == in, 2);
  EXPECT_OR_NOTE(c.bytes_sent() - before == to_others(recv), 4);
  return failed;
}

// Every pattern, in one order on every rank; the first failure's code (0 = all passed).
int check_all_patterns(communicator& c) {
  int first = 0;
  for (const auto& [name, n] : patterns())
    if (int code = check_pattern(c, n); code && !first) {
      std::fprintf(stderr, "rank %d: pattern '%s' failed\n", c.rank(), name);
      first = code;
    }
  c.barrier();
  return first;
}

// Forwards to a backend and counts all_to_all calls, so the router's choice is visible.
struct a2a_counted final : communicator {
  a2a_counted(std::unique_ptr<communicator> inner, std::atomic<int>* calls)
      : inner(std::move(inner)), calls(calls) {}
  int rank() const override { return inner->rank(); }
  int world() const override { return inner->world(); }
  std::string backend() const override { return inner->backend(); }
  void all_reduce(float* d, std::size_t n) override { inner->all_reduce(d, n); }
  void all_reduce(double* d, std::size_t n) override { inner->all_reduce(d, n); }
  void reduce_scatter(const float* in, float* out, std::size_t chunk) override {
    inner->reduce_scatter(in, out, chunk);
  }
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    inner->all_gather(in, out, chunk);
  }
  void broadcast(float* d, std::size_t n, int root) override { inner->broadcast(d, n, root); }
  void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                  std::span<const std::size_t> recv) override {
    calls->fetch_add(1);
    const auto before = inner->bytes_sent();
    inner->all_to_all(in, send, out, recv);
    add_bytes(inner->bytes_sent() - before);
  }
  void barrier() override { inner->barrier(); }
  std::unique_ptr<communicator> inner;
  std::atomic<int>* calls;
};

// A backend written before all_to_all existed: it keeps compiling and says what is missing.
struct old_backend final : communicator {
  int rank() const override { return 0; }
  int world() const override { return 1; }
  std::string backend() const override { return "old"; }
  void all_reduce(float*, std::size_t) override {}
  void all_reduce(double*, std::size_t) override {}
  void reduce_scatter(const float*, float*, std::size_t) override {}
  void all_gather(const float*, float*, std::size_t) override {}
  void broadcast(float*, std::size_t, int) override {}
  void barrier() override {}
};

}  // namespace

TEST_CASE("comm all_to_all: local group on 1 to 4 threads moves uneven pieces exactly") {
  for (int w = 1; w <= 4; ++w) {
    CAPTURE(w);
    auto g = make_local_group(w);
    std::vector<int> codes(static_cast<std::size_t>(w), -1);
    on_ranks(g, [&](communicator& c) {
      codes[static_cast<std::size_t>(c.rank())] = check_all_patterns(c);
    });
    for (int r = 0; r < w; ++r) {
      CAPTURE(r);
      CHECK(codes[static_cast<std::size_t>(r)] == 0);
    }
  }
}

TEST_CASE("comm all_to_all: local counts that disagree throw on every rank naming both") {
  auto g = make_local_group(3);
  std::vector<std::string> what(3);
  auto expect_all_throw = [&](const std::function<void(communicator&)>& fn) {
    what.assign(3, "");
    on_ranks(g, [&](communicator& c) {
      what[static_cast<std::size_t>(c.rank())] = error_of([&] { fn(c); });
    });
    CHECK(!what[0].empty());
    CHECK(what[0] == what[1]);
    CHECK(what[0] == what[2]);
  };
  std::vector<float> in(16, 1.0f), out(16);
  // Every rank sends 2 to every rank and expects 2, except rank 1, which expects 3 from rank 0.
  expect_all_throw([&](communicator& c) {
    std::vector<std::size_t> send(3, 2), recv(3, 2);
    if (c.rank() == 1) recv[0] = 3;
    c.all_to_all(in.data(), send, out.data(), recv);
  });
  CHECK(what[0] ==
        "comm local: all_to_all counts disagree: rank 0 sends 2 floats to rank 1, but rank 1 "
        "expects 3 from rank 0");
  // Wrong number of entries on rank 2.
  expect_all_throw([&](communicator& c) {
    std::vector<std::size_t> send(c.rank() == 2 ? 2 : 3, 1), recv(3, 1);
    c.all_to_all(in.data(), send, out.data(), recv);
  });
  CHECK(contains(what[0], "rank 2 called all_to_all with 2 send and 3 recv counts, expected 3"));
  // A null buffer with elements on rank 1.
  expect_all_throw([&](communicator& c) {
    std::vector<std::size_t> send(3, 1), recv(3, 1);
    c.all_to_all(in.data(), send, c.rank() == 1 ? nullptr : out.data(), recv);
  });
  CHECK(contains(what[0], "rank 1 called all_to_all of 3 floats in, 3 out with a null buffer"));
  // Overlapping in and out on rank 0.
  expect_all_throw([&](communicator& c) {
    std::vector<std::size_t> send(3, 1), recv(3, 1);
    c.all_to_all(in.data(), send, c.rank() == 0 ? in.data() + 2 : out.data(), recv);
  });
  CHECK(contains(what[0], "rank 0 called all_to_all with overlapping in and out"));
  // One rank in all_to_all, the others elsewhere.
  expect_all_throw([&](communicator& c) {
    std::vector<std::size_t> counts(3, 1);
    if (c.rank() == 2)
      c.all_to_all(in.data(), counts, out.data(), counts);
    else
      c.all_reduce(in.data(), 3);
  });
  CHECK(contains(what[0], "disagree on the collective"));
  // The group still works afterwards.
  std::vector<int> codes(3, -1);
  on_ranks(g, [&](communicator& c) {
    codes[static_cast<std::size_t>(c.rank())] = check_pattern(c, patterns()[0].second);
  });
  CHECK(codes == std::vector<int>{0, 0, 0});

  // world 1: the one pair is itself.
  auto one = make_local_group(1);
  const std::vector<std::size_t> two{2}, three{3};
  CHECK(error_of([&] { one[0]->all_to_all(in.data(), two, out.data(), three); }) ==
        "comm local: all_to_all counts disagree: rank 0 sends 2 floats to rank 0, but rank 0 "
        "expects 3 from rank 0");
  CHECK(contains(error_of([&] { one[0]->all_to_all(in.data(), {}, out.data(), {}); }),
                 "0 send and 0 recv counts, expected 1"));
}

TEST_CASE("comm all_to_all: bytes_sent counts what a rank sends to the others") {
  CHECK(to_string(op::all_to_all) == "all_to_all");
  const std::vector<std::size_t> send{1, 2, 3};
  CHECK(all_to_all_bytes(send, 1) == (1 + 3) * 4);
  CHECK(all_to_all_bytes(send, 0) == (2 + 3) * 4);
  CHECK(all_to_all_bytes(std::vector<std::size_t>{7}, 0) == 0);  // world 1
  CHECK(ring_bytes(op::all_to_all, 1200, 4, 1) == 900);          // even: (N-1)*B/N
  CHECK(ring_bytes(op::all_to_all, 1200, 1, 0) == 0);
  CHECK(message_bytes(op::all_to_all, 10, 4, 3) == 40);  // count = sum(send)

  auto g = make_local_group(3);
  std::vector<std::uint64_t> bytes(3);
  on_ranks(g, [&](communicator& c) {
    // Rank q sends q+r+1 floats to rank r.
    const auto me = static_cast<std::size_t>(c.rank());
    std::vector<std::size_t> s(3), r(3);
    for (std::size_t k = 0; k < 3; ++k) s[k] = me + k + 1, r[k] = k + me + 1;
    std::vector<float> in(total(s)), out(total(r));
    c.all_to_all(in.data(), s, out.data(), r);
    bytes[me] = c.bytes_sent();
  });
  CHECK(bytes[0] == (2 + 3) * 4);
  CHECK(bytes[1] == (2 + 4) * 4);
  CHECK(bytes[2] == (3 + 4) * 4);
}

TEST_CASE("comm all_to_all: the router sends it to the backend its table names") {
  CHECK(pick_route({{op::all_to_all, 0, 1}}, op::all_to_all, 0) == 1);
  CHECK(pick_route({{op::all_gather, 0, 1}}, op::all_to_all, 1 << 20) == 0);

  for (const bool to_second : {false, true}) {
    CAPTURE(to_second);
    const int w = 2;
    auto g0 = make_local_group(w), g1 = make_local_group(w);
    std::atomic<int> calls[2] = {0, 0};
    group routers;
    for (std::size_t r = 0; r < w; ++r) {
      group backends;
      backends.push_back(std::make_unique<a2a_counted>(std::move(g0[r]), &calls[0]));
      backends.push_back(std::make_unique<a2a_counted>(std::move(g1[r]), &calls[1]));
      routers.push_back(
          make_router(std::move(backends), to_second ? std::vector<route>{{op::all_to_all, 0, 1}}
                                                     : std::vector<route>{}));
    }
    std::vector<int> codes(w, -1);
    on_ranks(routers, [&](communicator& c) {
      codes[static_cast<std::size_t>(c.rank())] = check_pattern(c, patterns()[1].second);
    });
    CHECK(codes == std::vector<int>{0, 0});
    CHECK(calls[to_second ? 1 : 0].load() == 2 * w);  // there and back, on each rank
    CHECK(calls[to_second ? 0 : 1].load() == 0);
  }

  // Sizes differ between ranks, so a size threshold could split one call across backends.
  auto g = make_local_group(1);
  CHECK(contains(error_of([&] {
                   make_router(std::move(g), {{op::all_to_all, 4096, 0}});
                 }),
                 "table row 0 routes all_to_all from 4096 bytes"));
  // A communicator that does not implement it says so.
  old_backend old;
  float x = 1, y = 0;
  const std::vector<std::size_t> one{1};
  CHECK(error_of([&] { old.all_to_all(&x, one, &y, one); }) ==
        "comm old (rank 0 of 1): all_to_all is not implemented by this backend");
}

TEST_CASE("comm all_to_all: gloo with 1, 2 and 3 ranks moves uneven pieces exactly") {
  for (int w : {1, 2, 3}) {
    CAPTURE(w);
    temp_dir dir("comm_a2a");
    auto g = make_gloo_group(w, dir.path, "a2a", quick_options(std::chrono::seconds(20)));
    std::vector<int> codes(static_cast<std::size_t>(w), -1);
    on_ranks(g, [&](communicator& c) {
      codes[static_cast<std::size_t>(c.rank())] = check_all_patterns(c);
    });
    for (int r = 0; r < w; ++r) {
      CAPTURE(r);
      CHECK(codes[static_cast<std::size_t>(r)] == 0);
    }
  }
}

TEST_CASE("comm all_to_all: gloo refuses bad arguments and times out naming the op") {
  temp_dir dir("comm_a2a_err");
  auto one = make_gloo(0, 1, make_file_store(dir.path), "127.0.0.1", "solo");
  float in[4] = {1, 2, 3, 4}, out[4] = {};
  const std::vector<std::size_t> two{2}, three{3};
  CHECK(contains(error_of([&] { one->all_to_all(in, two, out, three); }),
                 "all_to_all sends 2 floats to itself but expects 3 from itself"));
  CHECK(contains(error_of([&] { one->all_to_all(in, {}, out, {}); }),
                 "all_to_all with 0 send and 0 recv counts, expected 1"));
  CHECK(contains(error_of([&] { one->all_to_all(in, two, in + 1, two); }), "overlapping"));
  CHECK(contains(error_of([&] { one->all_to_all(nullptr, two, out, two); }), "null buffer"));

  // Rank 1 joins the group but never enters: rank 0's all_to_all fails within op_timeout.
  auto g =
      make_gloo_group(2, dir.path / "idle", "idle", quick_options(std::chrono::milliseconds(300)));
  const std::vector<std::size_t> counts{1, 2};
  const auto t0 = std::chrono::steady_clock::now();
  const std::string what = error_of([&] { g[0]->all_to_all(in, counts, out, counts); });
  const auto took = std::chrono::steady_clock::now() - t0;
  CAPTURE(what);
  CHECK(contains(what,
                 "comm gloo: rank 0 of 2: all_to_all did not complete within 300 ms (a peer died "
                 "or stopped; limit set by train.comm_timeout_s)"));
  CHECK(took >= std::chrono::milliseconds(250));
  CHECK(took < std::chrono::seconds(3));
}
