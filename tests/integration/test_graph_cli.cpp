// `zeroflow graph` as a user meets it: check prints a good file's stages and connections and
// refuses a mis-wired one with the file and the reason (non-zero exit); types lists the stage
// types; run runs a graph to its end.
#include <doctest/doctest.h>

#include <fstream>

#include "integration/helpers.hpp"

using zf::testing::contains;
using zf::testing::temp_dir;
using zf::testing::zeroflow;

namespace {

std::string write(const temp_dir& d, const std::string& name, const std::string& text) {
  std::ofstream(d / name) << text;
  return (d / name).string();
}

}  // namespace

TEST_CASE("graph: check prints the shipped serve graph and refuses a mis-wired file") {
  temp_dir d("graphcheck");
  auto ok = zeroflow("graph check " ZF_SOURCE_DIR "/examples/graphs/serve.toml", d.path);
  CHECK(ok.code == 0);
  CHECK(contains(ok.out, "engine.backend -> gateway.backend"));
  CHECK(contains(ok.out, "gateway.listening -> announce.at"));

  // the gateway's required input is left unconnected
  const std::string bad = write(d, "bad.toml", R"(
[[stage]]
name = "engine"
type = "engine"
[[stage]]
name = "gateway"
type = "gateway"
[[connect]]
from = "engine.served"
to = "gateway.backend"
)");
  auto r = zeroflow("graph check " + bad, d.path);
  CHECK(r.code != 0);
  CHECK(contains(r.out, bad + ": connect #1 (engine.served -> gateway.backend): graph: cannot "
                              "connect engine.served (weights_served) to gateway.backend "
                              "(backend_ref)"));
  const std::string unwired = write(d, "unwired.toml", R"(
[[stage]]
name = "gateway"
type = "gateway"
)");
  r = zeroflow("graph check " + unwired, d.path);
  CHECK(r.code != 0);
  CHECK(contains(
      r.out, unwired + ": graph: required input gateway.backend (backend_ref) is not connected"));
  r = zeroflow(
      "graph check " + write(d, "typo.toml", "[[stage]]\nname = \"e\"\ntype = \"engin\"\n"),
      d.path);
  CHECK(r.code != 0);
  CHECK(contains(r.out,
                 "stage #1 'e': unknown type 'engin' (known: announce, engine, gateway, "
                 "monitor, policy, report, rl_monitor, rollout, score, train)"));
}

TEST_CASE("graph: types lists the built-in stage types and their options") {
  temp_dir d("graphtypes");
  auto r = zeroflow("graph types", d.path);
  CHECK(r.code == 0);
  for (const char* t : {"engine", "gateway", "announce", "train", "report", "checkpoint, hf"})
    CHECK(contains(r.out, t));
}

TEST_CASE("graph: run trains a tiny model from a graph file and reports the end") {
  temp_dir d("graphrun");
  const std::string g = write(d, "train.toml",
                              fmt::format(R"(
[[stage]]
name = "train"
type = "train"
options = {{ out = "{}", print_sample = false }}
[[stage]]
name = "report"
type = "report"
[[connect]]
from = "train.result"
to = "report.result"
)",
                                          (d / "run").string()));
  auto r = zeroflow("graph run " + g +
                        " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32"
                        " --set model.n_positions=128 --set train.steps=3 --set data.data_dir=" +
                        ZF_DATA_DIR,
                    d.path);
  CHECK_MESSAGE(r.code == 0, r.out);
  CHECK(contains(r.out, "zeroflow: training done at step 3"));
  CHECK(contains(r.out, "finished"));
}
