// Graphs from TOML (graph_toml.hpp): the file is read with toml++, each [[stage]] becomes a
// stage through its type's factory, each [[connect]] a graph::connect by names, and the result
// is checked. Every message is prefixed with where it applies ("FILE: stage #2 'gateway'").
#include "pipelines/graph_toml.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include "runtime/core/error.hpp"

namespace zf {
namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ", ") + e;
  return s.empty() ? "none" : s;
}

const char* kind_of(const stage_options::value& v) {
  static const char* names[] = {"a boolean", "an integer", "a number", "a string"};
  return names[v.index()];
}

template <class T>
const T* option_of(const stage_options& o, const std::string& key, const char* want) {
  auto it = o.values.find(key);
  if (it == o.values.end()) return nullptr;
  if (auto* v = std::get_if<T>(&it->second)) return v;
  fail("option '{}' must be {}, got {}", key, want, kind_of(it->second));
}

// Keys of a table outside `allowed`: refused, so a misspelt key is an error, not a default.
void check_keys(const toml::table& t, std::initializer_list<std::string_view> allowed,
                const std::string& where) {
  for (auto&& [k, v] : t) {
    (void)v;
    if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end()) {
      std::vector<std::string> a(allowed.begin(), allowed.end());
      fail("{}: unknown key '{}' (expected: {})", where, k.str(), joined(a));
    }
  }
}

std::string required_string(const toml::table& t, std::string_view key, const std::string& where) {
  const toml::node* n = t.get(key);
  if (!n) fail("{}: missing {} = \"...\"", where, key);
  auto s = n->value<std::string>();
  if (!s || !n->is_string()) fail("{}: {} must be a string", where, key);
  return *s;
}

const toml::array& array_of_tables(const toml::table& doc, std::string_view key,
                                   const std::string& source) {
  static const toml::array none;
  const toml::node* n = doc.get(key);
  if (!n) return none;
  const toml::array* a = n->as_array();
  if (!a || !a->is_array_of_tables())
    fail("{}: '{}' must be an array of tables ([[{}]] sections)", source, key, key);
  return *a;
}

void check_name(const std::string& name, const std::string& where) {
  const bool ok = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (!ok)
    fail(
        "{}: name '{}' must be letters, digits, '_' or '-' (connections name ports as "
        "\"stage.port\")",
        where, name);
}

stage_options options_of(const toml::table* t, const stage_type& type, const std::string& where) {
  stage_options o;
  if (!t) return o;
  for (auto&& [k, v] : *t) {
    const std::string key(k.str());
    if (std::find(type.options.begin(), type.options.end(), key) == type.options.end())
      fail("{}: unknown option '{}' (this type takes: {})", where, key, joined(type.options));
    if (auto b = v.value_exact<bool>())
      o.values[key] = *b;
    else if (auto i = v.value_exact<int64_t>())
      o.values[key] = *i;
    else if (auto d = v.value_exact<double>())
      o.values[key] = *d;
    else if (auto s = v.value_exact<std::string>())
      o.values[key] = *s;
    else
      fail("{}: option '{}' must be a string, integer, number or boolean", where, key);
  }
  return o;
}

// Written as [sections] (config = { engine = { ... } } would print as an inline table, which is
// not a document apply_toml reads).
void block_style(toml::table& t) {
  t.is_inline(false);
  for (auto&& [k, v] : t)
    if (auto* sub = v.as_table()) block_style(*sub);
}

// The run's config, then the stage's [stage.config], then the command line's overrides.
run_config config_of(const run_config& base, const toml::node* t,
                     const std::vector<std::string>& overrides, const std::string& where) {
  run_config c = base;
  try {
    if (t) {
      if (!t->is_table()) fail("config must be a table ([stage.config])");
      toml::table copy = *t->as_table();
      block_style(copy);
      std::ostringstream text;
      text << copy;
      apply_toml(c, text.str(), "[stage.config]");
    }
    for (const auto& o : overrides) apply_override(c, o);
    validate(c);
  } catch (const error& e) {
    fail("{}: {}", where, e.what());
  }
  return c;
}

void add_stage(graph& g, const toml::table& t, int index, const std::string& source,
               const run_config& cfg, const stage_registry& reg,
               const std::vector<std::string>& overrides) {
  std::string where = fmt::format("{}: stage #{}", source, index);
  const auto named = t["name"].value_exact<std::string>();  // in the message when it is there
  check_keys(t, {"name", "type", "config", "options"}, named ? where + " '" + *named + "'" : where);
  const std::string name = required_string(t, "name", where);
  check_name(name, where);
  where += " '" + name + "'";
  for (std::size_t i = 0; i < g.stages().size(); ++i)
    if (g.stages()[i]->name() == name) fail("{}: the name is taken by stage #{}", where, i + 1);
  const std::string type_name = required_string(t, "type", where);
  const stage_type* type = reg.find(type_name);
  if (!type) fail("{}: unknown type '{}' (known: {})", where, type_name, joined(reg.types()));
  const toml::node* opts = t.get("options");
  if (opts && !opts->is_table()) fail("{}: options must be a table ([stage.options])", where);
  stage_args a{name, config_of(cfg, t.get("config"), overrides, where),
               options_of(opts ? opts->as_table() : nullptr, *type, where)};
  std::unique_ptr<stage> s;
  try {
    s = type->make(a);
  } catch (const error& e) {
    fail("{}: {}", where, e.what());
  }
  if (!s) fail("{}: type '{}' made no stage", where, type_name);
  g.add(name, std::move(s));
}

// "stage.port" -> {stage, port}
std::pair<std::string, std::string> port_ref(const toml::table& t, std::string_view key,
                                             const std::string& where) {
  const std::string ref = required_string(t, key, where);
  const auto dot = ref.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == ref.size() ||
      ref.find('.', dot + 1) != std::string::npos)
    fail("{}: {} = '{}': expected \"stage.port\"", where, key, ref);
  return {ref.substr(0, dot), ref.substr(dot + 1)};
}

void add_connection(graph& g, const toml::table& t, int index, const std::string& source) {
  std::string where = fmt::format("{}: connect #{}", source, index);
  check_keys(t, {"from", "to", "credits"}, where);
  const auto [fs, fp] = port_ref(t, "from", where);
  const auto [ts, tp] = port_ref(t, "to", where);
  int64_t credits = 0;
  if (const toml::node* c = t.get("credits")) {
    auto v = c->value_exact<int64_t>();
    if (!v || *v < 0 || *v > (1 << 30))
      fail("{}: credits must be an integer >= 0 (0: unbounded)", where);
    credits = *v;
  }
  try {
    g.connect(fs, fp, ts, tp, static_cast<int>(credits));
  } catch (const error& e) {
    fail("{} ({}.{} -> {}.{}): {}", where, fs, fp, ts, tp, e.what());
  }
}

}  // namespace

std::string stage_options::text(const std::string& key, std::string def) const {
  auto* v = option_of<std::string>(*this, key, "a string");
  return v ? *v : def;
}
int64_t stage_options::integer(const std::string& key, int64_t def) const {
  auto* v = option_of<int64_t>(*this, key, "an integer");
  return v ? *v : def;
}
double stage_options::number(const std::string& key, double def) const {
  auto it = values.find(key);
  if (it != values.end())
    if (auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  auto* v = option_of<double>(*this, key, "a number");
  return v ? *v : def;
}
bool stage_options::boolean(const std::string& key, bool def) const {
  auto* v = option_of<bool>(*this, key, "true or false");
  return v ? *v : def;
}

void stage_registry::add(const std::string& type, stage_type t) {
  if (!t.make) fail("stage registry: type '{}' has no factory", type);
  if (!types_.emplace(type, std::move(t)).second)
    fail("stage registry: type '{}' is registered twice", type);
}

const stage_type* stage_registry::find(const std::string& type) const {
  auto it = types_.find(type);
  return it == types_.end() ? nullptr : &it->second;
}

std::vector<std::string> stage_registry::types() const {
  std::vector<std::string> v;
  for (const auto& [name, t] : types_) v.push_back(name);
  return v;
}

graph build_graph(const std::string& toml_text, const std::string& source, const run_config& cfg,
                  const stage_registry& reg, const std::vector<std::string>& overrides) {
  toml::table doc;
  try {
    doc = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    fail("{}:{}:{}: TOML parse error: {}", source, b.line, b.column, e.description());
  }
  check_keys(doc, {"stage", "connect"}, source);
  const toml::array& stages = array_of_tables(doc, "stage", source);
  const toml::array& conns = array_of_tables(doc, "connect", source);
  if (stages.empty()) fail("{}: no stages (a graph needs [[stage]] sections)", source);
  graph g;
  int i = 0;
  for (const toml::node& s : stages) add_stage(g, *s.as_table(), ++i, source, cfg, reg, overrides);
  i = 0;
  for (const toml::node& c : conns) add_connection(g, *c.as_table(), ++i, source);
  try {
    g.check();
  } catch (const error& e) {
    fail("{}: {}", source, e.what());
  }
  return g;
}

std::string describe(const graph& g) {
  std::size_t width = 0;
  for (const auto& s : g.stages()) width = std::max(width, s->name().size());
  std::string out = "stages:\n";
  for (const auto& s : g.stages()) {
    std::vector<std::string> in, outp;
    for (const port_desc& p : s->ports()) {
      std::string d = p.name + " (" + p.type_name;
      if (p.input && !p.required) d += ", optional";
      if (p.input && p.merge) d += ", merge";
      (p.input ? in : outp).push_back(d + ")");
    }
    out += fmt::format("  {:<{}}  in: {}  out: {}\n", s->name(), width, joined(in), joined(outp));
  }
  out += "connections:\n";
  for (const connection& c : g.connections()) {
    out += fmt::format("  {}.{} -> {}.{}", c.from->name(), c.from->ports()[c.from_port].name,
                       c.to->name(), c.to->ports()[c.to_port].name);
    out += c.credits > 0 ? fmt::format("  (credits {})\n", c.credits) : "\n";
  }
  if (g.connections().empty()) out += "  none\n";
  return out;
}

}  // namespace zf
