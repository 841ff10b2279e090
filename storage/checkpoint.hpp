#pragma once
// Checkpoints: ROOT/step-000123/ holds model.safetensors (fp32 parameters under Hugging Face
// GPT-2 names), optim.safetensors (AdamW exp_avg.<name>, exp_avg_sq.<name>) and manifest.json
// (format, step, run config as TOML, trainer state, and each file's size and CRC-32).
// Commit is atomic: everything is written into step-000123.tmp/, fsynced, the folder renamed,
// then ROOT/latest (a one-line file naming the folder) replaced by rename. A crash at any point
// leaves the previous checkpoint and `latest` intact. Loading verifies sizes and checksums of
// every file before a single value is used, so nothing is loaded half-way.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model.hpp"

namespace zf::storage {

struct checkpoint_view {  // what a save needs: pointers into live or snapshot buffers
  int step = 0;           // optimizer steps completed
  std::string config_toml;
  const param_layout* layout = nullptr;
  const float* params = nullptr;      // [layout->total]
  const float* exp_avg = nullptr;     // may be null (weights-only checkpoint)
  const float* exp_avg_sq = nullptr;  //
  nlohmann::json state;               // trainer/sampler state to resume exactly
};

// Writes ROOT/step-NNNNNN and moves ROOT/latest to it; removes the oldest step folders beyond
// `keep`. Returns the committed folder. Refuses to overwrite an existing step folder.
std::filesystem::path save_checkpoint(const std::filesystem::path& root, const checkpoint_view& c,
                                      int keep = 3);

struct loaded_checkpoint {
  std::filesystem::path dir;
  int step = 0;
  std::string config_toml;
  nlohmann::json state;
  std::vector<float> params, exp_avg,
      exp_avg_sq;  // flat, in the layout order; moments empty if absent
};

// dir: a step folder, or a root holding `latest`, or a run folder holding checkpoints/latest.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& dir);
// Reads the manifest only (cheap): step, config, state.
loaded_checkpoint read_manifest(const std::filesystem::path& dir);
// Verifies every file and reads every tensor of layout; zf::error names the file and parameter
// on a missing/truncated file, bad checksum or shape mismatch.
loaded_checkpoint load_checkpoint(const std::filesystem::path& dir, const param_layout& layout);

}  // namespace zf::storage
