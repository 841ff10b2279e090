#pragma once
// Tokenizer test fixtures: the tokenizer.json files of tests/golden/hf (written by
// tests/golden/gen_hf.py), edited in memory and written to a temp_dir to load.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/text/tokenizer.hpp"
#include "test_util.hpp"

namespace zf::testing {

inline const std::filesystem::path kHf =
    std::filesystem::path(ZF_SOURCE_DIR) / "tests" / "golden" / "hf";

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

// tests/golden/hf/<model>/tokenizer.json, parsed.
inline nlohmann::json fixture_json(const std::string& model) {
  return nlohmann::json::parse(slurp(kHf / model / "tokenizer.json"));
}

// Writes j as dir/tokenizer.json and loads it (with dir/tokenizer_config.json if written).
inline zf::tokenizer load_json(const temp_dir& dir, const nlohmann::json& j) {
  std::ofstream(dir / "tokenizer.json") << j.dump();
  return zf::tokenizer::load_hf(dir / "tokenizer.json");
}

// Appends added tokens with the next free ids, in order.
inline void add_special(nlohmann::json& j, const std::vector<std::string>& contents) {
  int next = 0;
  for (const auto& [k, v] : j["model"]["vocab"].items()) next = std::max(next, v.get<int>() + 1);
  for (const auto& a : j["added_tokens"]) next = std::max(next, a["id"].get<int>() + 1);
  for (const auto& c : contents)
    j["added_tokens"].push_back({{"id", next++}, {"content", c}, {"special", true}});
}

}  // namespace zf::testing
