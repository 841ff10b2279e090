// Graphs from TOML (pipelines/graph_toml): a graph of test-only stage types built from text runs
// and gives the values the same graph built in C++ would; every mistake in a file is refused
// with the file, the stage or connection and what was wrong; the built-in serve graph (the one
// `zeroflow serve` runs) and the shipped example graphs parse and check.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "pipelines/graph_run.hpp"
#include "pipelines/graph_toml.hpp"
#include "pipelines/rl_session.hpp"
#include "runtime/core/error.hpp"
#include "test_util.hpp"

using zf::testing::contains;
using zf::testing::error_of;

namespace {

struct number {
  int64_t v = 0;
};

}  // namespace

ZF_MESSAGE_NAME(number, "number");

namespace {

// Emits start, start + 1, ... (count of them) at start, then is done.
struct numbers_stage : zf::stage {
  zf::out_port<number> out = output<number>("out");
  int64_t start_at = 0, count = 0;
  void start(zf::stage_context& ctx) override {
    for (int64_t i = 0; i < count; ++i)
      ctx.emit(out, std::make_shared<const number>(number{start_at + i}));
    ctx.done();
  }
};

// Multiplies each number by factor.
struct scale_stage : zf::stage {
  zf::in_port<number> in = input<number>("in");
  zf::out_port<number> out = output<number>("out");
  int64_t factor = 2;
  void start(zf::stage_context& ctx) override {
    ctx.on(in, [this, &ctx](const std::shared_ptr<const number>& n) {
      ctx.emit(out, std::make_shared<const number>(number{n->v * factor}));
    });
  }
};

// Collects what it receives (in arrival order) into a list the test owns.
struct sink_stage : zf::stage {
  zf::in_port<number> in = input<number>("in", true, true);
  std::vector<int64_t>* got = nullptr;
  void start(zf::stage_context& ctx) override {
    ctx.on(in, [this](const std::shared_ptr<const number>& n) { got->push_back(n->v); });
  }
};

// The test types: numbers (options start, count; count defaults to the stage's
// engine.max_seqs, to see [stage.config] reach a factory), scale (option factor), sink.
zf::stage_registry test_registry(std::vector<int64_t>* got) {
  zf::stage_registry r;
  r.add("numbers", {"emits numbers; out out", {"start", "count"}, [](const zf::stage_args& a) {
                      auto s = std::make_unique<numbers_stage>();
                      s->start_at = a.options.integer("start", 0);
                      s->count = a.options.integer("count", a.cfg.engine.max_seqs);
                      return s;
                    }});
  r.add("scale", {"multiplies; in in, out out", {"factor"}, [](const zf::stage_args& a) {
                    auto s = std::make_unique<scale_stage>();
                    s->factor = a.options.integer("factor", 2);
                    return s;
                  }});
  r.add("sink", {"collects; in in", {}, [got](const zf::stage_args&) {
                   auto s = std::make_unique<sink_stage>();
                   s->got = got;
                   return s;
                 }});
  return r;
}

const std::string k_pipeline = R"(
[[stage]]
name = "src"
type = "numbers"
options = { start = 1, count = 5 }

[[stage]]
name = "x2"
type = "scale"

[[stage]]
name = "x10"
type = "scale"
[stage.options]
factor = 10

[[stage]]
name = "out"
type = "sink"

[[connect]]
from = "src.out"
to = "x2.in"

[[connect]]
from = "x2.out"
to = "x10.in"
credits = 2

[[connect]]
from = "x10.out"
to = "out.in"
)";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The message of building text as "g.toml" with the test types.
std::string build_error(const std::string& text) {
  std::vector<int64_t> got;
  return error_of([&] { zf::build_graph(text, "g.toml", zf::run_config{}, test_registry(&got)); });
}

}  // namespace

TEST_CASE("graph toml: a graph of registered types runs and gives the expected values") {
  std::vector<int64_t> got;
  zf::graph g = zf::build_graph(k_pipeline, "g.toml", zf::run_config{}, test_registry(&got));
  REQUIRE(g.stages().size() == 4);
  REQUIRE(g.connections().size() == 3);
  CHECK(g.connections()[1].credits == 2);
  zf::run_graph(g);
  CHECK(got == std::vector<int64_t>{20, 40, 60, 80, 100});
  const std::string d = zf::describe(g);
  CHECK(contains(d, "src  in: none  out: out (number)"));
  CHECK(contains(d, "x2.out -> x10.in  (credits 2)"));
}

TEST_CASE("graph toml: [stage.config] and the overrides reach the stage's factory") {
  const std::string text = R"(
[[stage]]
name = "src"
type = "numbers"
config = { engine = { max_seqs = 3 } }
[[stage]]
name = "plain"
type = "numbers"
[[stage]]
name = "out"
type = "sink"
[[connect]]
from = "src.out"
to = "out.in"
[[connect]]
from = "plain.out"
to = "out.in"
)";
  zf::run_config cfg;
  cfg.engine.max_seqs = 2;
  {  // src: its own config (3); plain: the run's (2)
    std::vector<int64_t> got;
    zf::graph g = zf::build_graph(text, "g.toml", cfg, test_registry(&got));
    zf::run_graph(g);
    CHECK(got.size() == 5);
  }
  {  // the overrides come last: 1 each
    std::vector<int64_t> got;
    zf::graph g = zf::build_graph(text, "g.toml", cfg, test_registry(&got), {"engine.max_seqs=1"});
    zf::run_graph(g);
    CHECK(got.size() == 2);
  }
  // a bad key or value in [stage.config] names the stage
  std::string bad = text;
  bad.replace(bad.find("max_seqs = 3"), 12, "max_seq = 3");
  CHECK(contains(build_error(bad),
                 "g.toml: stage #1 'src': unknown config key 'engine.max_seq' in [stage.config]"));
  bad = text;
  bad.replace(bad.find("max_seqs = 3"), 12, "max_seqs = 0");
  auto msg = build_error(bad);
  CHECK(contains(msg, "g.toml: stage #1 'src': "));
  CHECK(contains(msg, "engine.max_seqs"));
}

TEST_CASE("graph toml: stage mistakes name the file, the stage and what was wrong") {
  const std::string two = "[[stage]]\nname = \"a\"\ntype = \"sink\"\n";
  CHECK(contains(build_error("[[stage]]\nname = \"a\"\ntype = \"sinc\"\n"),
                 "g.toml: stage #1 'a': unknown type 'sinc' (known: numbers, scale, sink)"));
  CHECK(contains(build_error("[[stage]]\nname = \"s\"\ntype = \"numbers\"\n" + two + two +
                             "[[connect]]\nfrom = \"s.out\"\nto = \"a.in\"\n"),
                 "g.toml: stage #3 'a': the name is taken by stage #2"));
  CHECK(contains(build_error("[[stage]]\ntype = \"sink\"\n"),
                 "g.toml: stage #1: missing name = \"...\""));
  CHECK(contains(build_error("[[stage]]\nname = \"a.b\"\ntype = \"sink\"\n"),
                 "g.toml: stage #1: name 'a.b' must be letters, digits, '_' or '-'"));
  CHECK(contains(build_error("[[stage]]\nname = \"a\"\n"), "g.toml: stage #1 'a': missing type"));
  CHECK(contains(build_error("[[stage]]\nname = \"a\"\ntype = \"sink\"\nkind = 1\n"),
                 "g.toml: stage #1 'a': unknown key 'kind' (expected: name, type, config, "
                 "options)"));
  CHECK(
      contains(build_error("[[stage]]\nname = \"a\"\ntype = \"scale\"\noptions = { fator = 3 }\n"),
               "g.toml: stage #1 'a': unknown option 'fator' (this type takes: factor)"));
  CHECK(contains(
      build_error("[[stage]]\nname = \"a\"\ntype = \"scale\"\noptions = { factor = \"3\" }\n"),
      "g.toml: stage #1 'a': option 'factor' must be an integer, got a string"));
  CHECK(contains(build_error("[[stages]]\nname = \"a\"\n"),
                 "g.toml: unknown key 'stages' (expected: stage, connect)"));
  CHECK(contains(build_error("stage = 3\n"), "g.toml: 'stage' must be an array of tables"));
  CHECK(contains(build_error(""), "g.toml: no stages"));
  CHECK(contains(build_error("[[stage]\n"), "g.toml:1:"));  // TOML syntax: line and column
}

TEST_CASE("graph toml: connection mistakes and mis-wiring name the file and the connection") {
  const std::string stages = R"(
[[stage]]
name = "src"
type = "numbers"
[[stage]]
name = "x2"
type = "scale"
[[stage]]
name = "out"
type = "sink"
)";
  auto with = [&](const std::string& conns) { return build_error(stages + conns); };
  CHECK(contains(with("[[connect]]\nfrom = \"srcout\"\nto = \"x2.in\"\n"),
                 "g.toml: connect #1: from = 'srcout': expected \"stage.port\""));
  CHECK(contains(with("[[connect]]\nfrom = \"src.out\"\nto = \"x2.in.x\"\n"),
                 "g.toml: connect #1: to = 'x2.in.x': expected \"stage.port\""));
  CHECK(contains(with("[[connect]]\nfrom = \"src.out\"\n"), "g.toml: connect #1: missing to"));
  CHECK(contains(with("[[connect]]\nfrom = \"src.out\"\nto = \"x2.in\"\ncredits = -1\n"),
                 "g.toml: connect #1: credits must be an integer >= 0"));
  CHECK(contains(with("[[connect]]\nfrom = \"src.out\"\nto = \"x2.in\"\n"
                      "[[connect]]\nfrom = \"x2.out\"\nto = \"out.input\"\n"),
                 "g.toml: connect #2 (x2.out -> out.input): graph: stage 'out' has no port "
                 "'input' (ports: in)"));
  CHECK(contains(with("[[connect]]\nfrom = \"ghost.out\"\nto = \"x2.in\"\n"),
                 "g.toml: connect #1 (ghost.out -> x2.in): graph: no stage named 'ghost'"));
  CHECK(contains(with("[[connect]]\nfrom = \"x2.in\"\nto = \"out.in\"\n"),
                 "x2.in is an input port; a connection starts at an output"));
  // graph::check's messages, with the file
  CHECK(contains(with("[[connect]]\nfrom = \"src.out\"\nto = \"x2.in\"\n"),
                 "g.toml: graph: required input out.in (number) is not connected"));
  CHECK(contains(with("[[connect]]\nfrom = \"src.out\"\nto = \"x2.in\"\n"
                      "[[connect]]\nfrom = \"src.out\"\nto = \"x2.in\"\n"
                      "[[connect]]\nfrom = \"x2.out\"\nto = \"out.in\"\n"),
                 "g.toml: graph: input x2.in has 2 connections"));
}

TEST_CASE("graph toml: the built-in serve graph and the example graphs build and check") {
  // The built-in text is examples/graphs/serve.toml, byte for byte.
  CHECK(zf::default_serve_graph() == read_file(ZF_SOURCE_DIR "/examples/graphs/serve.toml"));
  const zf::stage_registry reg = zf::builtin_stages({.hf = "models/never-read"});
  zf::graph g = zf::build_graph(zf::default_serve_graph(), "serve.toml", zf::run_config{}, reg);
  REQUIRE(g.stages().size() == 3);
  CHECK(g.stages()[0]->name() == "engine");
  CHECK(contains(zf::describe(g), "engine.backend -> gateway.backend"));
  CHECK(contains(zf::describe(g), "gateway.listening -> announce.at"));
  // without a model the graph still checks (`zeroflow graph check`), and fails as the engine
  // starts, before the gateway listens
  zf::graph none = zf::build_graph(zf::default_serve_graph(), "serve.toml", zf::run_config{},
                                   zf::builtin_stages());
  CHECK(contains(error_of([&] { zf::run_graph(none); }),
                 "stage 'engine': start: give exactly one of --checkpoint DIR and --hf DIR"));
  // two models for one engine: refused at once
  CHECK(contains(error_of([&] {
                   zf::build_graph(zf::default_serve_graph(), "serve.toml", zf::run_config{},
                                   zf::builtin_stages({.checkpoint = "a", .hf = "b"}));
                 }),
                 "serve.toml: stage #1 'engine': give exactly one of --checkpoint DIR and --hf "
                 "DIR"));
  // training pushes weights into a served engine: the example builds with the built-in types
  zf::graph ts = zf::build_graph(read_file(ZF_SOURCE_DIR "/examples/graphs/train_and_serve.toml"),
                                 "train_and_serve.toml", zf::run_config{}, zf::builtin_stages());
  CHECK(contains(zf::describe(ts), "train.weights -> engine.weights  (credits 1)"));
}

TEST_CASE("graph toml: the built-in RLHF graph builds and checks without a model or run folder") {
  CHECK(zf::default_rl_graph() == read_file(ZF_SOURCE_DIR "/examples/graphs/rlhf.toml"));
  const zf::testing::temp_dir d("graph_rl_check");
  const auto out = d.path / "never-made";
  zf::graph g = zf::build_graph(zf::default_rl_graph(), "rlhf.toml", zf::run_config{},
                                zf::builtin_stages({.train_out = out.string()}));
  REQUIRE(g.stages().size() == 4);
  const std::string text = zf::describe(g);
  CHECK(contains(text, "rollout.rollouts -> score.in"));
  CHECK(contains(text, "score.out -> policy.rollouts"));
  CHECK(contains(text, "policy.weights -> rollout.weights  (credits 4)"));
  CHECK(contains(text, "rollout.evals -> monitor.evals"));
  CHECK(!std::filesystem::exists(out));  // building made nothing: the run starts with the graph
  // a connection left out is named
  std::string no_score = zf::default_rl_graph();
  const std::string line = "[[connect]]\nfrom = \"score.out\"\nto = \"policy.rollouts\"\n";
  REQUIRE(no_score.find(line) != std::string::npos);
  no_score.erase(no_score.find(line), line.size());
  CHECK(contains(error_of([&] {
                   zf::build_graph(no_score, "rl.toml", zf::run_config{}, zf::builtin_stages());
                 }),
                 "rl.toml: graph: required input policy.rollouts (rollouts) is not connected"));
}
