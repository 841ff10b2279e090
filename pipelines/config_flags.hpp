#pragma once
// Command-line flags generated from the config schema (runtime/core/config.hpp), so a subcommand's
// flags, its --config TOML and --set overrides are one thing: `--token-budget 512` is
// `--set engine.token_budget=512`. Flag names are the key's leaf with '_' and '.' as '-'; a
// boolean key gives --name and --no-name; a list key named in the plural (server.api_keys) also
// gives a repeatable singular flag (--api-key K --api-key L: the list [K, L], as vLLM's).
#include <map>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace zf {

struct config_args {
  std::string file;                                       // --config
  std::vector<std::string> sets;                          // --set, in order
  std::vector<std::string> flags;                         // the generated flags as key=value
  std::map<std::string, std::vector<std::string>> items;  // singular list flags, by key path
  // Overrides in the order they apply: --set, then the flags (more specific).
  std::vector<std::string> overrides() const;
};

// Adds --config FILE, --set KEY=VALUE and one flag per key of `sections` (e.g. {"engine",
// "server"}) to app, filling a (which must outlive the parse).
void add_config_flags(CLI::App* app, const std::vector<std::string>& sections, config_args& a);

}  // namespace zf
