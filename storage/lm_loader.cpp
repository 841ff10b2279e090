#include "storage/lm_loader.hpp"

#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"

namespace fs = std::filesystem;

namespace zf::storage {

checkpoint_model load_checkpoint_model(const fs::path& dir) {
  auto head = read_manifest(dir);
  checkpoint_model out;
  apply_toml(out.config, head.config_toml, (head.dir / "manifest").string());
  auto ck = load_checkpoint(head.dir, layout_of(out.config.model));
  std::string name = head.dir.parent_path().parent_path().filename().string();
  if (name.empty()) name = "zeroflow-gpt2";
  out.weights = lm_weights_of(out.config.model, ck.params.data(), name);
  return out;
}

lm_weights load_lm_weights(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec))
    fail("{}: no such folder (want a zeroflow checkpoint or a Hugging Face model folder)",
         dir.string());
  if (fs::is_directory(dir, ec) && fs::exists(dir / "config.json", ec)) return load_hf_weights(dir);
  return load_checkpoint_model(dir).weights;
}

}  // namespace zf::storage
