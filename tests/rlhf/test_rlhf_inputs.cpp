// Bad input to the RLHF stages is refused up front, naming the file and line (or the role and
// the figure), before any model is trained or any metric written.
#include <doctest/doctest.h>

#include <fstream>

#include "rlhf_helpers.hpp"

using namespace zf;
using namespace zf::testing;

namespace {

std::filesystem::path write(const temp_dir& d, const std::string& name, const std::string& text) {
  const auto p = d / name;
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST_CASE("rlhf inputs: malformed prompts, SFT pairs and preferences name the file and line") {
  temp_dir d("rlhf_inputs");
  const auto prompts = write(d, "prompts.jsonl",
                             "{\"prompt\": \"reverse abc=\", \"answer\": \"cba\"}\n\n"
                             "{\"prompt\": \"reverse ab=\", \"answer\": \"ba\"\n");
  rl_run_options o;
  o.out = (d / "run").string();
  o.quiet = true;
  std::string msg = error_of([&] {
    run_rl(rlhf_config_with({"rlhf.prompts=" + prompts.string(), "rlhf.sft_steps=0"}), o);
  });
  CHECK(msg.find(prompts.string() + ":3:") != std::string::npos);
  CHECK(msg.find("malformed JSON") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(d / "run" / "metrics.jsonl"));

  const auto empty = write(d, "empty_prompt.jsonl", "{\"prompt\": \"\"}\n");
  msg = error_of([&] {
    run_rl(rlhf_config_with({"rlhf.prompts=" + empty.string(), "rlhf.sft_steps=0"}), o);
  });
  CHECK(msg.find(empty.string() + ":1:") != std::string::npos);
  CHECK(msg.find("empty") != std::string::npos);

  const auto sft = write(d, "sft.jsonl",
                         "{\"prompt\": \"copy ab=\", \"response\": \"ab\"}\n"
                         "{\"prompt\": \"copy cd=\", \"response\": \"\"}\n");
  msg = error_of([&] { run_sft(rlhf_config_with({"rlhf.sft_data=" + sft.string()}), o); });
  CHECK(msg.find(sft.string() + ":2:") != std::string::npos);

  const auto prefs = write(d, "prefs.jsonl",
                           "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
                           "{\"prompt\": \"p\", \"chosen\": \"same\", \"rejected\": \"same\"}\n");
  msg = error_of(
      [&] { run_reward(rlhf_config_with({"rlhf.preference_data=" + prefs.string()}), o); });
  CHECK(msg.find(prefs.string() + ":2:") != std::string::npos);
  CHECK(msg.find("identical") != std::string::npos);
}

TEST_CASE("rlhf inputs: a run that cannot fit in memory is refused naming the roles") {
  temp_dir d("rlhf_memory");
  rl_run_options o;
  o.out = (d / "run").string();
  o.quiet = true;
  const std::string msg = error_of([&] {
    run_rl(rlhf_config_with(
               {"rlhf.prompts_per_step=60000", "rlhf.group_size=1000", "rlhf.sft_steps=0"}),
           o);
  });
  CHECK(msg.find("this machine has") != std::string::npos);
  CHECK(msg.find("policy") != std::string::npos);
  CHECK(msg.find("rollout engine") != std::string::npos);
  CHECK(msg.find("rlhf.prompts_per_step") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(d / "run" / "metrics.jsonl"));
}

TEST_CASE("rlhf inputs: prompts longer than the policy's context are refused") {
  temp_dir d("rlhf_context");
  rl_run_options o;
  o.out = (d / "run").string();
  o.quiet = true;
  const std::string msg = error_of([&] {
    run_rl(rlhf_config_with({"rlhf.max_new_tokens=30", "rlhf.sft_steps=0"}), o);
  });
  CHECK(msg.find("model.n_positions") != std::string::npos);
  CHECK(msg.find("rlhf.max_new_tokens 30") != std::string::npos);
}

TEST_CASE("rlhf: SFT starts from a Hugging Face folder and GRPO continues from its checkpoint") {
  temp_dir d("rlhf_hf");
  rl_run_options o;
  o.out = (d / "sft").string();
  o.quiet = true;
  const auto hf = std::string(ZF_SOURCE_DIR) + "/tests/golden/hf/tiny-gpt2";
  const sft_run_result s =
      run_sft(rlhf_config_with({"model.init_hf=" + hf, "rlhf.sft_steps=40"}), o);
  MESSAGE("sft from tiny-gpt2: loss " << s.loss_first << " -> " << s.loss_last);
  CHECK(s.loss_last < 0.8 * s.loss_first);
  // The run folder carries the Hugging Face tokenizer, so the checkpoint is a starting point.
  CHECK(std::filesystem::exists(d / "sft" / "tokenizer.json"));
  rl_run_options g;
  g.out = (d / "grpo").string();
  g.checkpoint = s.checkpoint;
  g.quiet = true;
  const rl_run_result r = run_rl(rlhf_config_with({"rlhf.steps=3", "rlhf.prompts_per_step=4"}), g);
  const auto m = read_jsonl(d / "grpo" / "metrics.jsonl");
  REQUIRE(m.size() == 3);
  for (auto& j : m) CHECK(j["logprob_gap_max"].get<double>() == 0.0);
  CHECK(read_json(d / "grpo" / "summary.json")["steps"] == 3);
  CHECK(std::filesystem::exists(std::filesystem::path(r.checkpoint) / "manifest"));
}
