// The data plane: local (threads) and gloo (forked processes) collectives against closed-form
// answers, bit-identical results across ranks, aliasing, reuse, byte accounting, the router's
// table, and the errors a user sees (bad arguments, mismatched calls, a peer that never starts).
// Values are rank*1000 + i (exact in float) so a block in the wrong place shows as a wrong number.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "comm_groups.hpp"
#include "runtime/core/error.hpp"
#include "runtime/dist/comm.hpp"

namespace {

using namespace zf::comm;
using group = zf::testing::comm_group;
using zf::testing::on_ranks;

float val(int rank, std::size_t i) {
  return static_cast<float>(rank * 1000 + static_cast<int>(i));
}

// sum over ranks r < world of (r*1000 + i): exact in float for the sizes used here.
float sum_val(int world, std::size_t i) {
  return static_cast<float>(1000 * world * (world - 1) / 2 + world * static_cast<int>(i));
}

// Not exactly representable sums: order of addition shows in the bits.
float messy(int rank, std::size_t i) {
  return static_cast<float>(std::sin(0.37 * static_cast<double>(i) + 1.3 * rank) * 1e3 + 0.1);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// A unique empty directory under the system temp dir, removed on destruction.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "zf_comm_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Runs body(rank) for ranks 1..world-1 in forked children (their exit status is the result) and
// for rank 0 in this process; returns each rank's result (0 = all checks passed). A child that
// has not exited 30 s after rank 0 finished is killed and reported as -1.
std::vector<int> run_processes(int world, const std::function<int(int)>& body) {
  std::fflush(nullptr);  // children must not flush the parent's buffered output again
  std::vector<pid_t> kids;
  for (int r = 1; r < world; ++r) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 90;
      try {
        code = body(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d threw: %s\n", r, e.what());
        code = 91;
      } catch (...) {
        code = 92;
      }
      std::fflush(nullptr);
      ::_exit(code);
    }
    kids.push_back(pid);
  }
  std::vector<int> codes(static_cast<std::size_t>(world), -1);
  try {
    codes[0] = body(0);
  } catch (const std::exception& e) {
    MESSAGE("rank 0 threw: " << e.what());
    codes[0] = 91;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (std::size_t k = 0; k < kids.size(); ++k) {
    int status = 0;
    for (;;) {
      const pid_t got = ::waitpid(kids[k], &status, WNOHANG);
      if (got == kids[k]) {
        codes[k + 1] = WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(kids[k], SIGKILL);
        ::waitpid(kids[k], &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  return codes;
}

#define EXPECT_OR_RETURN(cond, code)                                                 \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "rank %d: check %d failed: %s\n", c.rank(), code, #cond); \
      return code;                                                                   \
    }                                                                                \
  } while (0)

// Every collective with closed-form answers, for one rank of any backend; 0 = all passed.
// Sizes include ones past the gloo reduce-scatter segment (1 MiB) and past local's stack block.
int check_collectives(communicator& c) {
  const int w = c.world(), me = c.rank();
  const std::size_t ws = static_cast<std::size_t>(w);

  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{37}, std::size_t{5003}}) {
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = val(me, i);
    c.all_reduce(x.data(), n);
    for (std::size_t i = 0; i < n; ++i) EXPECT_OR_RETURN(x[i] == sum_val(w, i), 1);
  }

  std::vector<double> d = {me + 0.25, me * 1024.0 + 0.125};
  c.all_reduce(d.data(), d.size());
  EXPECT_OR_RETURN(d[0] == w * (w - 1) / 2.0 + 0.25 * w, 2);
  EXPECT_OR_RETURN(d[1] == 1024.0 * w * (w - 1) / 2.0 + 0.125 * w, 2);

  for (std::size_t chunk : {std::size_t{0}, std::size_t{3}, std::size_t{300'001}}) {
    std::vector<float> in(ws * chunk), out(chunk, -1.0f);
    for (std::size_t j = 0; j < in.size(); ++j) in[j] = val(me, j % 4096);
    c.reduce_scatter(in.data(), out.data(), chunk);
    const std::size_t base = static_cast<std::size_t>(me) * chunk;
    for (std::size_t i = 0; i < chunk; ++i)
      EXPECT_OR_RETURN(out[i] == sum_val(w, (base + i) % 4096), 3);
    // In place: out = in + rank*chunk.
    c.reduce_scatter(in.data(), in.data() + base, chunk);
    for (std::size_t i = 0; i < chunk; ++i)
      EXPECT_OR_RETURN(in[base + i] == sum_val(w, (base + i) % 4096), 4);
  }

  for (std::size_t chunk : {std::size_t{0}, std::size_t{5}, std::size_t{70'000}}) {
    std::vector<float> in(chunk), out(ws * chunk, -1.0f);
    for (std::size_t i = 0; i < chunk; ++i) in[i] = val(me, i % 4096);
    c.all_gather(in.data(), out.data(), chunk);
    for (int k = 0; k < w; ++k)
      for (std::size_t i = 0; i < chunk; ++i)
        EXPECT_OR_RETURN(out[static_cast<std::size_t>(k) * chunk + i] == val(k, i % 4096), 5);
    // In place: in = out + rank*chunk.
    std::vector<float> buf(ws * chunk, -1.0f);
    std::copy(in.begin(), in.end(), buf.begin() + static_cast<std::ptrdiff_t>(me * chunk));
    c.all_gather(buf.data() + me * chunk, buf.data(), chunk);
    EXPECT_OR_RETURN(same_bits(buf, out), 6);
  }

  for (int root = 0; root < w; ++root) {
    std::vector<float> x(1000);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = val(me, i);
    c.broadcast(x.data(), x.size(), root);
    for (std::size_t i = 0; i < x.size(); ++i) EXPECT_OR_RETURN(x[i] == val(root, i), 7);
  }

  // Bits: a messy all_reduce must come out identical on every rank (checked against root 0's
  // copy), and a second run must repeat it.
  std::vector<float> m(20'000), m2;
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = messy(me, i);
  m2 = m;
  c.all_reduce(m.data(), m.size());
  c.all_reduce(m2.data(), m2.size());
  EXPECT_OR_RETURN(same_bits(m, m2), 8);
  std::vector<float> root_copy = m;
  c.broadcast(root_copy.data(), root_copy.size(), 0);
  EXPECT_OR_RETURN(same_bits(m, root_copy), 9);

  c.barrier();
  return 0;
}

// Forwards to a backend and counts calls per backend id, so the router's choice is visible.
struct counted final : communicator {
  counted(std::unique_ptr<communicator> inner, std::atomic<int>* calls)
      : inner(std::move(inner)), calls(calls) {}
  int rank() const override { return inner->rank(); }
  int world() const override { return inner->world(); }
  std::string backend() const override { return inner->backend(); }
  void all_reduce(float* d, std::size_t n) override { hit(), inner->all_reduce(d, n), sync(); }
  void all_reduce(double* d, std::size_t n) override { hit(), inner->all_reduce(d, n), sync(); }
  void reduce_scatter(const float* in, float* out, std::size_t chunk) override {
    hit(), inner->reduce_scatter(in, out, chunk), sync();
  }
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    hit(), inner->all_gather(in, out, chunk), sync();
  }
  void broadcast(float* d, std::size_t n, int root) override {
    hit(), inner->broadcast(d, n, root), sync();
  }
  void barrier() override { hit(), inner->barrier(); }
  void hit() { calls->fetch_add(1); }
  void sync() { add_bytes(inner->bytes_sent() - seen), seen = inner->bytes_sent(); }
  std::unique_ptr<communicator> inner;
  std::atomic<int>* calls;
  std::uint64_t seen = 0;
};

}  // namespace

TEST_CASE("comm: local group on 1 to 4 threads passes every closed-form check") {
  for (int w = 1; w <= 4; ++w) {
    CAPTURE(w);
    auto g = make_local_group(w);
    REQUIRE(g.size() == static_cast<std::size_t>(w));
    std::vector<int> codes(static_cast<std::size_t>(w), -1);
    on_ranks(g, [&](communicator& c) {
      CHECK(c.world() == w);
      codes[static_cast<std::size_t>(c.rank())] = check_collectives(c);
    });
    for (int r = 0; r < w; ++r) CHECK(codes[static_cast<std::size_t>(r)] == 0);
    CHECK(g[0]->backend() == "local");
  }
}

TEST_CASE("comm: local sums in rank order and gives every rank the same bits") {
  for (int w = 2; w <= 4; ++w) {
    CAPTURE(w);
    const std::size_t n = 10'007, chunk = 2'501;
    // Reference: ((x0 + x1) + x2) + x3, element by element.
    std::vector<float> ref(n);
    for (std::size_t i = 0; i < n; ++i) {
      float s = messy(0, i);
      for (int r = 1; r < w; ++r) s += messy(r, i);
      ref[i] = s;
    }
    std::vector<std::vector<float>> got(static_cast<std::size_t>(w)),
        shard(static_cast<std::size_t>(w));
    auto g = make_local_group(w);
    on_ranks(g, [&](communicator& c) {
      const auto r = static_cast<std::size_t>(c.rank());
      std::vector<float> x(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = messy(c.rank(), i);
      std::vector<float> in(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(chunk * g.size()));
      c.all_reduce(x.data(), n);
      got[r] = x;
      shard[r].resize(chunk);
      c.reduce_scatter(in.data(), shard[r].data(), chunk);
    });
    for (int r = 0; r < w; ++r) {
      CAPTURE(r);
      CHECK(same_bits(got[static_cast<std::size_t>(r)], ref));
      // reduce_scatter equals the matching all_reduce slice, bit for bit.
      const auto b = ref.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(r) * chunk);
      CHECK(same_bits(shard[static_cast<std::size_t>(r)],
                      std::vector<float>(b, b + static_cast<std::ptrdiff_t>(chunk))));
    }
  }
}

TEST_CASE("comm: local group survives many repeated calls and the barrier orders phases") {
  const int w = 3;
  auto g = make_local_group(w);
  std::atomic<int> arrived{0};
  std::atomic<int> early{0};
  std::vector<int> bad(w, 0);
  on_ranks(g, [&](communicator& c) {
    const auto r = static_cast<std::size_t>(c.rank());
    float x[7], out[3 * 2], mine[2];
    for (int it = 0; it < 2000; ++it) {
      for (int i = 0; i < 7; ++i) x[i] = static_cast<float>(c.rank() + it + i);
      c.all_reduce(x, 7);
      for (int i = 0; i < 7; ++i) bad[r] += x[i] != static_cast<float>(3 + 3 * (it + i));
      mine[0] = static_cast<float>(c.rank()), mine[1] = static_cast<float>(it);
      c.all_gather(mine, out, 2);
      for (int k = 0; k < w; ++k)
        bad[r] += out[2 * k] != static_cast<float>(k) || out[2 * k + 1] != static_cast<float>(it);
      c.broadcast(x, 7, it % w);
    }
    // Nobody passes the barrier before everyone arrived.
    arrived.fetch_add(1);
    c.barrier();
    if (arrived.load() != w) early.fetch_add(1);
  });
  for (int r = 0; r < w; ++r) CHECK(bad[static_cast<std::size_t>(r)] == 0);
  CHECK(early.load() == 0);
}

TEST_CASE("comm: bytes_sent follows the ring formulas") {
  CHECK(ring_bytes(op::all_reduce, 4000, 1, 0) == 0);
  CHECK(ring_bytes(op::all_reduce, 4000, 4, 2) == 6000);    // 2*(N-1)*B/N
  CHECK(ring_bytes(op::reduce_scatter, 160, 4, 0) == 120);  // (N-1)*chunk*4
  CHECK(ring_bytes(op::all_gather, 160, 4, 3) == 120);
  CHECK(ring_bytes(op::broadcast, 400, 4, 0, 1) == 0);  // the rank before root sends 0
  CHECK(ring_bytes(op::broadcast, 400, 4, 1, 1) == 400);
  CHECK(message_bytes(op::reduce_scatter, 10, 4, 4) == 160);
  CHECK(message_bytes(op::all_reduce, 10, 8, 4) == 80);

  auto g = make_local_group(4);
  std::vector<std::uint64_t> after(4), after_reset(4);
  on_ranks(g, [&](communicator& c) {
    std::vector<float> x(1000, 1.0f), in(40, 1.0f), out(40);
    double d[2] = {1, 2};
    c.all_reduce(x.data(), 1000);                 // 6000
    c.reduce_scatter(in.data(), out.data(), 10);  // 120
    c.all_gather(in.data(), out.data(), 10);      // 120
    c.broadcast(x.data(), 100, 1);                // 400, rank 0: 0
    c.all_reduce(d, 2);                           // 2*3*16/4 = 24
    c.barrier();                                  // 0
    after[static_cast<std::size_t>(c.rank())] = c.bytes_sent();
    c.barrier();
    c.reset_bytes();
    c.all_gather(in.data(), out.data(), 1);  // 12
    after_reset[static_cast<std::size_t>(c.rank())] = c.bytes_sent();
  });
  CHECK(after[0] == 6000 + 120 + 120 + 0 + 24);
  for (int r = 1; r < 4; ++r)
    CHECK(after[static_cast<std::size_t>(r)] == 6000 + 120 + 120 + 400 + 24);
  for (int r = 0; r < 4; ++r) CHECK(after_reset[static_cast<std::size_t>(r)] == 12);
}

TEST_CASE("comm: local calls that disagree throw on every rank and leave the group usable") {
  auto g = make_local_group(2);
  std::vector<std::string> what(2);
  auto expect_all_throw = [&](const std::function<void(communicator&)>& fn) {
    what.assign(2, "");
    on_ranks(g, [&](communicator& c) {
      try {
        fn(c);
      } catch (const zf::error& e) {
        what[static_cast<std::size_t>(c.rank())] = e.what();
      }
    });
    CHECK(!what[0].empty());
    CHECK(what[0] == what[1]);
  };
  float x[8] = {};
  expect_all_throw([&](communicator& c) { c.all_reduce(x, c.rank() == 0 ? 4 : 5); });
  CHECK(what[0].find("disagree") != std::string::npos);
  expect_all_throw([&](communicator& c) {
    if (c.rank() == 0)
      c.barrier();
    else
      c.all_reduce(x, 1);
  });
  expect_all_throw([&](communicator& c) { c.all_reduce(c.rank() == 1 ? nullptr : x, 3); });
  CHECK(what[0].find("rank 1") != std::string::npos);
  CHECK(what[0].find("null") != std::string::npos);
  expect_all_throw([&](communicator& c) { c.broadcast(x, 3, 2); });
  CHECK(what[0].find("root 2") != std::string::npos);
  // Still works afterwards.
  std::vector<float> sums(2);
  on_ranks(g, [&](communicator& c) {
    float y = static_cast<float>(c.rank() + 1);
    c.all_reduce(&y, 1);
    sums[static_cast<std::size_t>(c.rank())] = y;
  });
  CHECK(sums[0] == 3.0f);
  CHECK(sums[1] == 3.0f);
}

TEST_CASE("comm: bad arguments are refused with zf::error") {
  CHECK_THROWS_AS(make_local_group(0), zf::error);
  CHECK_THROWS_AS(make_local_group(-3), zf::error);
  temp_dir dir;
  auto store = make_file_store(dir.path);
  CHECK_THROWS_WITH_AS(make_gloo(2, 2, store, "127.0.0.1", "x"),
                       doctest::Contains("rank 2 out of range"), zf::error);
  CHECK_THROWS_AS(make_gloo(-1, 2, store, "127.0.0.1", "x"), zf::error);
  CHECK_THROWS_AS(make_gloo(0, 0, store, "127.0.0.1", "x"), zf::error);
  CHECK_THROWS_AS(make_gloo(0, 1, nullptr, "127.0.0.1", "x"), zf::error);
  CHECK_THROWS_AS(make_router({}), zf::error);
  {
    auto g = make_local_group(1);
    CHECK_THROWS_WITH_AS(make_router(std::move(g), {{op::all_reduce, 0, 1}}),
                         doctest::Contains("backend 1"), zf::error);
  }
  {
    auto a = make_local_group(1), b = make_local_group(2);
    group both;
    both.push_back(std::move(a[0]));
    both.push_back(std::move(b[0]));
    CHECK_THROWS_AS(make_router(std::move(both)), zf::error);
  }
  // world 1: null buffers with zero elements are fine, with elements they are not.
  auto one = make_local_group(1);
  CHECK_NOTHROW(one[0]->all_reduce(static_cast<float*>(nullptr), 0));
  CHECK_NOTHROW(one[0]->all_gather(nullptr, nullptr, 0));
  CHECK_THROWS_AS(one[0]->all_reduce(static_cast<float*>(nullptr), 2), zf::error);
  float x = 1;
  CHECK_THROWS_AS(one[0]->broadcast(&x, 1, 1), zf::error);
}

TEST_CASE("comm: router sends each op and size to the backend its table names") {
  CHECK(pick_route({}, op::all_reduce, 1 << 30) == 0);
  const std::vector<route> table = {
      {op::all_reduce, 4096, 1}, {op::all_reduce, 0, 0}, {op::all_gather, 0, 1}};
  CHECK(pick_route(table, op::all_reduce, 4095) == 0);
  CHECK(pick_route(table, op::all_reduce, 4096) == 1);
  CHECK(pick_route(table, op::all_gather, 0) == 1);
  CHECK(pick_route(table, op::broadcast, 1 << 20) == 0);

  const int w = 2;
  auto g0 = make_local_group(w), g1 = make_local_group(w);
  std::atomic<int> calls[2] = {0, 0};
  group routers;
  for (int r = 0; r < w; ++r) {
    group backends;
    backends.push_back(
        std::make_unique<counted>(std::move(g0[static_cast<std::size_t>(r)]), &calls[0]));
    backends.push_back(
        std::make_unique<counted>(std::move(g1[static_cast<std::size_t>(r)]), &calls[1]));
    routers.push_back(make_router(std::move(backends), table));
  }
  CHECK(routers[0]->backend() == "router(local,local)");
  CHECK(routers[1]->rank() == 1);
  CHECK(routers[1]->world() == 2);

  std::vector<int> bad(w, 0);
  std::vector<std::uint64_t> bytes(w);
  auto step = [&](int expect0, int expect1, const std::function<void(communicator&)>& fn) {
    const int before0 = calls[0].load(), before1 = calls[1].load();
    on_ranks(routers, fn);
    CHECK(calls[0].load() - before0 == expect0 * w);
    CHECK(calls[1].load() - before1 == expect1 * w);
  };
  step(1, 0, [&](communicator& c) {  // 10 floats = 40 bytes: backend 0
    std::vector<float> x(10, 1.0f);
    c.all_reduce(x.data(), x.size());
    bad[static_cast<std::size_t>(c.rank())] += x[9] != 2.0f;
  });
  step(0, 1, [&](communicator& c) {  // 1024 floats = 4096 bytes: backend 1
    std::vector<float> x(1024, 1.0f);
    c.all_reduce(x.data(), x.size());
    bad[static_cast<std::size_t>(c.rank())] += x[1023] != 2.0f;
  });
  step(0, 1, [&](communicator& c) {  // all_gather: backend 1 from 0 bytes
    float in = static_cast<float>(c.rank()), out[2];
    c.all_gather(&in, out, 1);
    bad[static_cast<std::size_t>(c.rank())] += out[0] != 0.0f || out[1] != 1.0f;
  });
  step(3, 0, [&](communicator& c) {  // reduce_scatter, broadcast, barrier: backend 0
    float in[2] = {1, 2}, out = 0;
    c.reduce_scatter(in, &out, 1);
    bad[static_cast<std::size_t>(c.rank())] += out != 2.0f * static_cast<float>(c.rank() + 1);
    c.broadcast(in, 2, 1);
    c.barrier();
  });
  step(1, 0, [&](communicator& c) {  // 2 doubles = 16 bytes: backend 0
    double d[2] = {0.5, 1.5};
    c.all_reduce(d, 2);
    bad[static_cast<std::size_t>(c.rank())] += d[0] != 1.0 || d[1] != 3.0;
    bytes[static_cast<std::size_t>(c.rank())] = c.bytes_sent();
  });
  CHECK(bad[0] == 0);
  CHECK(bad[1] == 0);
  // 40 + 4096 + 8/2... per rank, w = 2: all_reduce B -> B, reduce_scatter/all_gather -> B/2,
  // broadcast -> B except rank 0 (just before root 1).
  CHECK(bytes[0] == 40 + 4096 + 4 + 4 + 0 + 16);
  CHECK(bytes[1] == 40 + 4096 + 4 + 4 + 8 + 16);
}

TEST_CASE("comm: file store sets and gets atomically and times out naming the key") {
  temp_dir dir;
  auto s = make_file_store(dir.path / "nested");
  s->set("run/0", {'a', 'b'});
  CHECK(s->get("run/0", std::chrono::milliseconds(10)) == std::vector<char>{'a', 'b'});
  s->set("run/0", {'c'});
  CHECK(s->get("run/0", std::chrono::milliseconds(10)) == std::vector<char>{'c'});
  s->set("", {});
  CHECK(s->get("", std::chrono::milliseconds(10)).empty());
  // A second store on the same folder (another process in real use) sees the keys.
  CHECK(make_file_store(dir.path / "nested")->get("run/0", std::chrono::milliseconds(10)) ==
        std::vector<char>{'c'});
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(s->get("run/1", std::chrono::milliseconds(50)), doctest::Contains("'run/1'"),
                       zf::error);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  // A value set by another thread while get waits is picked up.
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s->set("late key", {'z'});
  });
  CHECK(s->get("late key", std::chrono::seconds(5)) == std::vector<char>{'z'});
  late.join();
}

TEST_CASE("comm: gloo world 1 is a no-op group") {
  temp_dir dir;
  auto c = make_gloo(0, 1, make_file_store(dir.path), "127.0.0.1", "solo");
  CHECK(c->backend() == "gloo");
  CHECK(check_collectives(*c) == 0);
  CHECK(c->bytes_sent() == 0);
}

TEST_CASE("comm: gloo with 2 and 3 processes passes every closed-form check") {
  for (int w : {2, 3}) {
    CAPTURE(w);
    temp_dir dir;
    const auto codes = run_processes(w, [&](int rank) {
      gloo_options o;
      o.rendezvous_timeout = std::chrono::seconds(10);
      o.op_timeout = std::chrono::seconds(20);
      auto c = make_gloo(rank, w, make_file_store(dir.path), "127.0.0.1", "group", o);
      if (c->rank() != rank || c->world() != w) return 50;
      if (int code = check_collectives(*c)) return code;
      // Accounting: one more all_reduce of 1000 floats after a reset.
      c->reset_bytes();
      std::vector<float> x(1000, 1.0f);
      c->all_reduce(x.data(), x.size());
      if (c->bytes_sent() != ring_bytes(op::all_reduce, 4000, w, rank)) return 51;
      return 0;
    });
    for (int r = 0; r < w; ++r) {
      CAPTURE(r);
      CHECK(codes[static_cast<std::size_t>(r)] == 0);
    }
  }
}

TEST_CASE("comm: gloo rank whose peer never starts fails naming the missing rank") {
  temp_dir dir;
  gloo_options o;
  o.rendezvous_timeout = std::chrono::milliseconds(300);
  const auto t0 = std::chrono::steady_clock::now();
  std::string what;
  try {
    make_gloo(0, 2, make_file_store(dir.path), "127.0.0.1", "lonely", o);
  } catch (const zf::error& e) {
    what = e.what();
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  CAPTURE(what);
  CHECK(what.find("rank 1") != std::string::npos);
  CHECK(what.find("lonely/1") != std::string::npos);
  CHECK(took < std::chrono::seconds(3));
}
