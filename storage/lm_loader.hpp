#pragma once
// Inference weights from a model folder on disk, whichever of the two kinds it is: a zeroflow
// checkpoint (GPT-2; a run folder, its checkpoints/ root or one step folder) or a Hugging Face
// folder (config.json + *.safetensors, storage/hf_loader.cpp). `zeroflow serve` loads its model
// with these, and the serving engine its weight updates (POST /v1/update_weights_from_disk).
#include <filesystem>

#include "runtime/core/config.hpp"
#include "runtime/model/lm_weights.hpp"

namespace zf::storage {

struct checkpoint_model {
  lm_weights weights;  // named after the run folder (runs/<name>/checkpoints/step-N)
  run_config config;   // the run's configuration, from the manifest
};

// The parameters of a zeroflow checkpoint as inference weights. zf::error names the manifest or
// the file for a missing, corrupt or truncated checkpoint.
checkpoint_model load_checkpoint_model(const std::filesystem::path& dir);

// The run configuration a checkpoint was written with (data.data_dir replaced by data_dir when
// that is not empty), from its manifest alone.
run_config load_checkpoint_config(const std::filesystem::path& dir, const std::string& data_dir);

// A Hugging Face folder when dir holds config.json, else a zeroflow checkpoint. zf::error names
// the folder or file that is missing or wrong.
lm_weights load_lm_weights(const std::filesystem::path& dir);

}  // namespace zf::storage
