#include "pipelines/config_flags.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>

#include "runtime/core/config.hpp"

namespace zf {

std::vector<std::string> config_args::overrides() const {
  std::vector<std::string> all = sets;
  all.insert(all.end(), flags.begin(), flags.end());
  for (const auto& [path, values] : items) {
    if (values.empty()) continue;
    std::string list;  // a TOML array of basic strings: any key text survives
    for (const auto& v : values) {
      std::string q;
      for (char c : v) q += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
      list += (list.empty() ? "" : ", ") + ("\"" + q + "\"");
    }
    all.push_back(path + "=[" + list + "]");
  }
  return all;
}

void add_config_flags(CLI::App* app, const std::vector<std::string>& sections, config_args& a) {
  app->add_option("--config", a.file, "TOML config file (see `zeroflow config`)")
      ->check(CLI::ExistingFile);
  app->add_option("--set", a.sets, "override one key, e.g. --set engine.token_budget=512")
      ->allow_extra_args(false);
  std::vector<std::string>& sets = a.flags;
  for (const key_info& k : config_schema()) {
    const std::string section = k.path.substr(0, k.path.find('.'));
    if (std::find(sections.begin(), sections.end(), section) == sections.end()) continue;
    std::string flag = k.path.substr(section.size() + 1);
    for (char& ch : flag)
      if (ch == '_' || ch == '.') ch = '-';
    const std::string path = k.path;
    const std::string help = k.help + " [" + path + "]";
    if (k.kind == key_kind::boolean) {
      app->add_flag_function(
          "--" + flag + ",!--no-" + flag,
          [&sets, path](int64_t n) { sets.push_back(path + (n > 0 ? "=true" : "=false")); }, help);
      continue;
    }
    auto* opt = app->add_option_function<std::string>(
        "--" + flag, [&sets, path](const std::string& v) { sets.push_back(path + "=" + v); }, help);
    opt->default_str(value_text(run_config{}, path));
    if (k.kind == key_kind::choice) opt->check(CLI::IsMember(k.choices));
    if (k.kind == key_kind::list && flag.size() > 1 && flag.back() == 's')
      app->add_option("--" + flag.substr(0, flag.size() - 1), a.items[path],
                      "one item of " + path + " (repeat the flag for more)");
  }
}

}  // namespace zf
