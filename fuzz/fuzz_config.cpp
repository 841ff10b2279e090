// libFuzzer target: a TOML document -> apply_toml over the defaults, then validate, as
// `--config FILE` does (load_config). A document that applies must also survive the trip a
// checkpoint gives it: to_toml (what the manifest stores) read back by apply_toml gives the same
// TOML again; a config that cannot be reloaded would strand a run at resume.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  zf::run_config cfg;
  try {
    zf::apply_toml(cfg, text, "fuzz.toml");
  } catch (const zf::error&) {
    return 0;  // refused, naming the file, line and key
  }
  try {
    zf::validate(cfg);
  } catch (const zf::error&) {
  }
  const std::string saved = zf::to_toml(cfg);
  zf::run_config back;
  try {
    zf::apply_toml(back, saved, "saved.toml");
  } catch (const zf::error& e) {
    ZF_FUZZ_CHECK(false, "to_toml output does not read back: %s\n%s", e.what(), saved.c_str());
  }
  const std::string again = zf::to_toml(back);
  ZF_FUZZ_CHECK(again == saved, "to_toml is not stable:\n%s\n---\n%s", saved.c_str(),
                again.c_str());
  return 0;
}
