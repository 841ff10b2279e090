// An RL run records its roles' busy spans in spans.jsonl (runtime/monitor/span_log), the console's
// timeline: one per batch generated, scored and trained on, one per weights swap, each actor's in
// time order without overlap, read back with the console's reader (jsonl_tail).
#include <doctest/doctest.h>

#include <map>

#include "rlhf_helpers.hpp"
#include "runtime/monitor/jsonl_tail.hpp"
#include "runtime/monitor/run_status.hpp"

using namespace zf;
using namespace zf::testing;

TEST_CASE("rlhf spans: every role's busy spans land in spans.jsonl, in order") {
  temp_dir d("rlhf_spans");
  run_rl_stage(d.path, {"rlhf.steps=6", "rlhf.overlap=1"});
  monitor::jsonl_tail tail(d / "spans.jsonl");
  const auto b = tail.poll();
  CHECK(b.skipped == 0);
  REQUIRE(b.rows.size() > 1);
  CHECK(b.rows[0]["start_unix"].get<double>() > 1.7e9);
  std::map<std::string, int> count;
  std::map<std::string, double> last_end;
  for (std::size_t i = 1; i < b.rows.size(); ++i) {
    const auto& r = b.rows[i];
    const std::string actor = r["actor"], key = actor + "/" + r["what"].get<std::string>();
    const double t0 = r["t0"], t1 = r["t1"];
    CAPTURE(key);
    CHECK(t0 >= 0);
    CHECK(t1 >= t0);
    CHECK(t0 >= last_end[actor]);  // an actor does one thing at a time
    last_end[actor] = t1;
    ++count[key];
  }
  CHECK(count["rollout/generate"] == 6);
  CHECK(count["score/score"] == 6);
  CHECK(count["policy/update"] == 6);
  CHECK(count["rollout/sync"] == 4);  // overlap 1: batches 2..5 need versions 1..4
  // run.json of the same run: an RL run that did all its updates
  const auto st = monitor::read_run_status(d.path);
  REQUIRE(st.has_value());
  CHECK(st->state == monitor::run_state::finished);
  CHECK(st->kind == "rl");
  CHECK(st->total_steps == 6);
  CHECK(contains(st->config, "steps = 6 "));  // rlhf.steps, the resolved config
}
