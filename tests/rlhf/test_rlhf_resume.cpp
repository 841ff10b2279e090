// An RL run stopped and resumed gives the uninterrupted run's numbers bit for bit: PPO (policy,
// reference, critic and their AdamW moments) with rollouts one update ahead (overlap 1), whose
// checkpoint must also carry the weights the rollout in flight was generated with.
#include <doctest/doctest.h>

#include "rlhf_helpers.hpp"
#include "storage/checkpoint.hpp"

using namespace zf;
using namespace zf::testing;

TEST_CASE(
    "rlhf resume: stop after 6 of 10 updates, resume: the same metrics and weights, bit for bit") {
  for (const char* algorithm : {"ppo", "grpo"}) {
    CAPTURE(algorithm);
    temp_dir d("rlhf_resume");
    const std::vector<std::string> sets = {std::string("rlhf.algorithm=") + algorithm,
                                           "rlhf.steps=10", "rlhf.overlap=1", "checkpoint.every=4"};
    const rl_outcome straight = run_rl_stage(d / "straight", sets);

    rl_run_options o;
    o.out = (d / "resumed").string();
    o.checkpoint = rlhf_fixture("sft").string();
    o.quiet = true;
    o.stop_after = 6;
    const rl_run_result first = run_rl(rlhf_config_with(sets), o);
    CHECK(first.rl.interrupted);
    CHECK(first.rl.steps == 6);
    CHECK(std::filesystem::exists(d / "resumed" / "roles" / "version-5"));  // batch 7's weights
    rl_run_options again;
    again.out = o.out;
    again.resume = true;
    again.quiet = true;
    const rl_run_result second = run_rl(run_config{}, again);  // the run's own configuration
    CHECK(second.rl.steps == 10);

    const auto a = straight.metrics, b = read_jsonl(d / "resumed" / "metrics.jsonl");
    REQUIRE(a.size() == 10);
    CHECK(check_same_metrics(a, b) > 100);
    const param_layout layout = make_layout(spec_of(rlhf_config_with({}).model));
    const auto wa = storage::load_checkpoint(straight.result.checkpoint, layout);
    const auto wb = storage::load_checkpoint(second.checkpoint, layout);
    CHECK(wa.step == 10);
    CHECK(wb.step == 10);
    CHECK(wa.params == wb.params);
    CHECK(wa.exp_avg == wb.exp_avg);
  }
}

TEST_CASE("rlhf resume: a folder without a checkpoint is refused by name") {
  temp_dir d("rlhf_resume_none");
  rl_run_options o;
  o.out = d.path.string();
  o.resume = true;
  o.quiet = true;
  const std::string msg = error_of([&] { run_rl(run_config{}, o); });
  CHECK(msg.find(d.path.string()) != std::string::npos);
  CHECK(msg.find("no checkpoint") != std::string::npos);
}
