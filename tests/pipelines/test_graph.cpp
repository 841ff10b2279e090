// The graph DSL's checks: typed connections, required inputs, single or merged inputs, and
// cycles that need a credit bound; every refusal names the stages and ports.
#include <doctest/doctest.h>

#include "pipelines/graph.hpp"
#include "runtime/core/error.hpp"
#include "test_util.hpp"

using zf::testing::contains;
using zf::testing::error_of;

namespace {

struct numbers {
  std::vector<int> v;
};
struct text {
  std::string s;
};

}  // namespace

ZF_MESSAGE_NAME(numbers, "numbers");
ZF_MESSAGE_NAME(text, "text");

namespace {

struct source : zf::stage {
  zf::out_port<numbers> out = output<numbers>("out");
  zf::in_port<numbers> feedback = input<numbers>("feedback", false);
};
struct doubler : zf::stage {
  zf::in_port<numbers> in = input<numbers>("in");
  zf::out_port<numbers> out = output<numbers>("out");
};
struct printer : zf::stage {
  zf::in_port<text> in = input<text>("in", true, true);
};
struct formatter : zf::stage {
  zf::in_port<numbers> in = input<numbers>("in");
  zf::out_port<text> out = output<text>("out");
};

}  // namespace

TEST_CASE("graph: a well-wired graph passes, by handle and by name") {
  zf::graph g;
  auto& s = g.add<source>("src");
  auto& d = g.add<doubler>("x2");
  auto& f = g.add<formatter>("fmt");
  g.add<printer>("print");
  g.connect(s.out, d.in);
  g.connect(d.out, f.in);
  g.connect("fmt", "out", "print", "in");
  g.connect(s.out, f.in);  // fmt.in now has two connections: refused below
  auto msg = error_of([&] { g.check(); });
  CHECK(contains(msg, "input fmt.in has 2 connections"));
}

TEST_CASE("graph: mis-wired graphs are refused naming stages and ports") {
  {
    zf::graph g;
    g.add<source>("src");
    g.add<formatter>("fmt");
    g.add<printer>("print");
    g.connect("src", "out", "fmt", "in");
    auto msg = error_of([&] { g.check(); });
    CHECK(contains(msg, "required input print.in (text) is not connected"));
    msg = error_of([&] { g.connect("src", "out", "print", "in"); });
    CHECK(contains(msg, "cannot connect src.out (numbers) to print.in (text)"));
    msg = error_of([&] { g.connect("fmt", "in", "print", "in"); });
    CHECK(contains(msg, "fmt.in is an input port"));
    msg = error_of([&] { g.connect("src", "nope", "fmt", "in"); });
    CHECK(contains(msg, "stage 'src' has no port 'nope' (ports: out, feedback)"));
    msg = error_of([&] { g.connect("ghost", "out", "fmt", "in"); });
    CHECK(contains(msg, "no stage named 'ghost'"));
    msg = error_of([&] { g.add<source>("src"); });
    CHECK(contains(msg, "two stages are named 'src'"));
  }
  // a cycle: unbounded is refused, a credit bound on one edge makes it legal
  for (int credits : {0, 4}) {
    zf::graph g;
    auto& s = g.add<source>("src");
    auto& d = g.add<doubler>("x2");
    auto& f = g.add<formatter>("fmt");
    auto& p = g.add<printer>("print");
    g.connect(s.out, d.in);
    g.connect(d.out, s.feedback, credits);
    g.connect(d.out, f.in);
    g.connect(f.out, p.in);
    if (credits == 0) {
      auto msg = error_of([&] { g.check(); });
      CHECK(
          contains(msg, "the cycle src.out -> x2.in, x2.out -> src.feedback has no credit bound"));
    } else {
      CHECK_NOTHROW(g.check());
    }
  }
}

// Mismatched port types do not compile: connect(out_port<T>, in_port<T>) deduces one T.
template <class A, class B>
concept connectable = requires(zf::graph& g, A a, B b) {
  g.connect(a, b);
};
static_assert(connectable<zf::out_port<numbers>, zf::in_port<numbers>>);
static_assert(!connectable<zf::out_port<numbers>, zf::in_port<text>>);
static_assert(!connectable<zf::in_port<numbers>, zf::out_port<numbers>>);

// ---- running ---------------------------------------------------------------------------------

#include <atomic>
#include <thread>

#include "pipelines/graph_run.hpp"

namespace {

// Emits 1..n on its own thread, then is done.
struct counter : zf::stage {
  zf::out_port<numbers> out = output<numbers>("out");
  int n;
  std::thread th;
  explicit counter(int n_) : n(n_) {}
  void start(zf::stage_context& ctx) override {
    th = std::thread([this, &ctx] {
      for (int i = 1; i <= n && !ctx.stopping(); ++i)
        ctx.emit(out, std::make_shared<const numbers>(numbers{{i}}));
      ctx.done();
    });
  }
  void stop() override {
    if (th.joinable()) th.join();
  }
};

struct scale : zf::stage {
  zf::in_port<numbers> in = input<numbers>("in");
  zf::out_port<numbers> out = output<numbers>("out");
  void start(zf::stage_context& ctx) override {
    ctx.on(in, [this, &ctx](const std::shared_ptr<const numbers>& m) {
      ctx.emit(out, std::make_shared<const numbers>(numbers{{m->v[0] * 1000}}));
    });
  }
};

// Sums what arrives on a merged input; done when every input is closed (the default).
struct summer : zf::stage {
  zf::in_port<numbers> in = input<numbers>("in", true, true);
  std::vector<int> seen;
  void start(zf::stage_context& ctx) override {
    ctx.on(in, [this](const std::shared_ptr<const numbers>& m) { seen.push_back(m->v[0]); });
  }
};

struct thrower : zf::stage {
  zf::in_port<numbers> in = input<numbers>("in");
  void start(zf::stage_context& ctx) override {
    ctx.on(in, [](const std::shared_ptr<const numbers>& m) {
      if (m->v[0] == 3) throw zf::error("three is not allowed");
    });
  }
};

}  // namespace

TEST_CASE("graph run: a custom fan-in graph delivers everything in order, then ends") {
  zf::graph g;
  auto& a = g.add<counter>("a", 50);
  auto& b = g.add<counter>("b", 30);
  auto& x = g.add<scale>("x1000");
  auto& s = g.add<summer>("sum");
  g.connect(a.out, x.in, 4);  // bounded: the counter waits for the scaler
  g.connect(x.out, s.in);
  g.connect(b.out, s.in);
  zf::run_graph(g);
  REQUIRE(s.seen.size() == 80);
  std::vector<int> from_a, from_b;
  for (int v : s.seen) (v >= 1000 ? from_a : from_b).push_back(v);
  // per connection, order is kept
  CHECK(std::is_sorted(from_a.begin(), from_a.end()));
  CHECK(std::is_sorted(from_b.begin(), from_b.end()));
  long total = 0;
  for (int v : s.seen) total += v;
  CHECK(total == 1000L * (50 * 51 / 2) + 30 * 31 / 2);
}

TEST_CASE("graph run: a failing handler fails the run naming stage and port, stop ends it") {
  zf::graph g;
  auto& a = g.add<counter>("a", 10);
  auto& t = g.add<thrower>("picky");
  g.connect(a.out, t.in);
  auto msg = error_of([&] { zf::run_graph(g); });
  CHECK(contains(msg, "stage 'picky': port in: three is not allowed"));

  // a stage that never ends: the stop flag ends the run
  zf::graph h;
  struct forever : zf::stage {};
  h.add<forever>("idle");
  std::atomic<bool> stop{false};
  std::thread t2([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop = true;
  });
  zf::run_graph(h, {.stop = &stop});
  t2.join();
  // mis-wired graphs are refused before anything starts
  zf::graph m;
  m.add<summer>("lonely");
  msg = error_of([&] { zf::run_graph(m); });
  CHECK(contains(msg, "required input lonely.in"));
}
