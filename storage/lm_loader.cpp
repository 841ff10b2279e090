#include "storage/lm_loader.hpp"

#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"
#include "storage/quant_checkpoint.hpp"

namespace fs = std::filesystem;

namespace zf::storage {

checkpoint_model load_checkpoint_model(const fs::path& dir) {
  const auto m = read_checkpoint_manifest(dir);
  checkpoint_model out;
  apply_toml(out.config, m.config_toml, (m.dir / "manifest").string());
  std::string name = m.dir.parent_path().parent_path().filename().string();
  if (name.empty()) name = "zeroflow-gpt2";
  // A tokenizer named by a relative path is the checkpoint root's own (a quantized Hugging Face
  // model carries its tokenizer.json there), when it is there.
  auto& tok = out.config.data.tokenizer;
  std::error_code ec;
  if (tok != "gpt2" && fs::path(tok).is_relative() && fs::exists(m.dir.parent_path() / tok, ec))
    tok = (m.dir.parent_path() / tok).string();
  if (m.quantized()) {
    out.weights = load_quantized_weights(m, spec_of(out.config.model), name);
    return out;
  }
  // straight into the weights' own buffer: no staging copy of the model (we own it and drop it
  // on failure, so fragments need not be staged)
  model_spec spec = spec_of(out.config.model);
  spec.name = name;
  const param_layout L = make_layout(spec);
  fbuffer flat(L.total);
  range_options o;
  o.all_or_nothing = false;
  load_range(m, L, 0, L.total, flat.data(), nullptr, nullptr, o);
  out.weights = make_lm_weights(spec, std::move(flat));
  return out;
}

run_config load_checkpoint_config(const fs::path& dir, const std::string& data_dir) {
  const auto head = read_manifest(dir);
  run_config cfg;
  apply_toml(cfg, head.config_toml, (head.dir / "manifest").string());
  if (!data_dir.empty()) cfg.data.data_dir = data_dir;
  return cfg;
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
