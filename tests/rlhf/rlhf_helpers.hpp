#pragma once
// Shared by the RLHF tests: the fixtures `rlhf_fixtures` (tests/CMakeLists.txt) trains once per
// test run through the CLI (a noisy-SFT policy, a clean-SFT body and a reward model on it), and
// running a stage in this process from them.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipelines/rl_run.hpp"
#include "runtime/rl/tasks.hpp"
#include "test_util.hpp"

namespace zf::testing {

inline std::filesystem::path rlhf_fixture(const std::string& name) {
  const auto p = std::filesystem::path(ZF_BINARY_DIR) / "test-fixtures" / "rlhf" / name;
  REQUIRE_MESSAGE(std::filesystem::exists(p / "summary.json"),
                  "missing fixture " << p.string() << ": run the rlhf_fixtures test first");
  return p;
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

inline run_config rlhf_config_with(const std::vector<std::string>& sets) {
  run_config c;
  rl::apply_task_defaults(c);
  for (auto& s : sets) apply_override(c, s);
  validate(c);
  return c;
}

struct rl_outcome {
  rl_run_result result;
  std::vector<nlohmann::json> metrics;
  nlohmann::json summary;
};

// An RL stage from the noisy-SFT policy, in the folder `out`.
inline rl_outcome run_rl_stage(const std::filesystem::path& out,
                               const std::vector<std::string>& sets) {
  rl_run_options o;
  o.out = out.string();
  o.checkpoint = rlhf_fixture("sft").string();
  o.quiet = true;
  rl_outcome r;
  r.result = run_rl(rlhf_config_with(sets), o);
  r.metrics = read_jsonl(out / "metrics.jsonl");
  r.summary = read_json(out / "summary.json");
  return r;
}

// The same numbers in two runs' metrics.jsonl, key by key, except the wall-clock ones; returns
// how many values were compared.
inline int check_same_metrics(const std::vector<nlohmann::json>& a,
                              const std::vector<nlohmann::json>& b) {
  REQUIRE(a.size() == b.size());
  int compared = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    for (auto& [k, v] : a[i].items()) {
      if (k.starts_with("time_") || k.starts_with("idle_") || k.ends_with("_per_s")) continue;
      CAPTURE(i);
      CAPTURE(k);
      CHECK(b[i][k].dump() == v.dump());
      ++compared;
    }
  return compared;
}

}  // namespace zf::testing
