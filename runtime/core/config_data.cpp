// The `data.*` keys and issue 13's data-efficiency keys (train.tokens, train.random_ltd.*,
// data.sources, data.curriculum.*), declared through the same schema as config.cpp's; the two
// list kinds they need beyond lists of strings (integer_list: std::vector<int64_t>,
// source_list: data.sources); and the cross-key checks that need only the config (the pacing
// checks of an enabled curriculum are runtime/train/curriculum's, which runtime/core cannot see).
#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "runtime/core/config_keys.hpp"
#include "runtime/core/error.hpp"

namespace zf::config_detail {
namespace {

using metric_ptr = metric_curriculum curriculum_config::*;

template <class T>
std::function<void*(run_config&)> metric_ref(metric_ptr m, T metric_curriculum::*field) {
  return [m, field](run_config& c) -> void* { return &(c.data.curriculum.*m.*field); };
}

// data.curriculum.<name>.* for one metric (config.hpp: metric_curriculum).
std::vector<key> metric_keys(const std::string& name, metric_ptr m) {
  const std::string p = "data.curriculum." + name + ".";
  using mc = metric_curriculum;
  const bool seqlen = name == "seqlen";
  return {
      make_key(p + "enabled", key_kind::boolean, metric_ref(m, &mc::enabled), 0, 1,
               seqlen ? "curriculum by sequence length: short windows first (arXiv 2108.06084)"
                      : "curriculum by the " + name + " index `zeroflow data analyze` wrote"),
      make_key(p + "difficulty_type", key_kind::choice, metric_ref(m, &mc::difficulty_type), 0, 0,
               seqlen ? "value (the difficulty is the sequence length; percentile is refused)"
                      : "value: samples whose metric is at most the difficulty; percentile: the "
                        "easiest difficulty% of them",
               {"value", "percentile"}),
      make_key(p + "pacing", key_kind::choice, metric_ref(m, &mc::pacing), 0, 0,
               "how the difficulty grows from min to max (DeepSpeed's schedules)",
               {"fixed_linear", "fixed_root", "fixed_discrete"}),
      make_key(p + "min_difficulty", key_kind::integer, metric_ref(m, &mc::min_difficulty), 0, 1e9,
               seqlen ? "tokens per window at step 0 (>= 1 when enabled)"
                      : "difficulty at step 0 (percentile: 0..100)"),
      make_key(p + "max_difficulty", key_kind::integer, metric_ref(m, &mc::max_difficulty), 0, 1e9,
               seqlen ? "tokens per window at the end; 0 = train.seq_len"
                      : "difficulty at the end (percentile: at most 100)"),
      wide(make_key(p + "total_steps", key_kind::integer, metric_ref(m, &mc::total_steps), 0, 1e9,
                    "fixed_linear / fixed_root: steps from min to max difficulty")),
      make_key(p + "difficulty_step", key_kind::integer, metric_ref(m, &mc::difficulty_step), 1,
               1 << 20,
               seqlen ? "difficulties move in multiples of this (8 keeps GEMMs even)"
                      : "difficulties move in multiples of this"),
      make_key(p + "root_degree", key_kind::integer, metric_ref(m, &mc::root_degree), 1, 64,
               "fixed_root: the root's degree (2: square root)"),
      make_key(p + "difficulties", key_kind::integer_list, metric_ref(m, &mc::difficulties), 0, 1e9,
               "fixed_discrete: the difficulties in order"),
      make_key(p + "max_steps", key_kind::integer_list, metric_ref(m, &mc::max_steps), 0, 1e9,
               "fixed_discrete: difficulty i up to step max_steps[i] (one fewer than "
               "difficulties)"),
      make_key(p + "index", key_kind::string, metric_ref(m, &mc::index), 0, 0,
               seqlen ? "unused by seqlen (it needs no index)"
                      : "the folder `zeroflow data analyze --out` wrote; \"\" = <data_dir>/index"),
  };
}

std::string int_text(double v) {
  return fmt::format("{}", static_cast<int64_t>(v));
}

void check_int_item(const key& k, std::size_t i, int64_t v) {
  if (!(double(v) >= k.info.lo && double(v) <= k.info.hi))
    fail("{}[{}]: expected {}..{}, got {}", k.info.path, i, int_text(k.info.lo),
         int_text(k.info.hi), v);
}

std::string source_name(const key& k, std::size_t i, const data_source& s) {
  return fmt::format("{}[{}] (\"{}\")", k.info.path, i, s.path);
}

void check_source(const key& k, std::size_t i, const data_source& s) {
  if (s.path.empty()) fail("{}[{}]: expected a corpus name or path, got \"\"", k.info.path, i);
  if (!(s.weight > 0) || !std::isfinite(s.weight))
    fail("{}: expected a finite weight > 0, got {}", source_name(k, i, s), s.weight);
}

std::vector<int64_t> int_items_from_toml(const key& k, const toml::node& n,
                                         const std::string& where) {
  const toml::array* a = n.as_array();
  if (!a) fail("{}: expected a list of integers, got {} ({})", k.info.path, node_text(n), where);
  std::vector<int64_t> v;
  for (std::size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    if (!e.is_integer())
      fail("{}[{}]: expected an integer, got {} ({})", k.info.path, i, node_text(e), where);
    v.push_back(*e.value<int64_t>());
    check_int_item(k, i, v.back());
  }
  return v;
}

data_source source_from_toml(const key& k, std::size_t i, const toml::node& e,
                             const std::string& where) {
  const toml::table* t = e.as_table();
  if (!t)
    fail("{}[{}]: expected a table {{path = \"...\", weight = ...}}, got {} ({})", k.info.path, i,
         node_text(e), where);
  data_source s;
  bool has_path = false;
  for (auto&& [name, field] : *t) {
    if (name.str() == "path") {
      if (!field.is_string())
        fail("{}[{}].path: expected a string, got {} ({})", k.info.path, i, node_text(field),
             where);
      s.path = *field.value<std::string>();
      has_path = true;
    } else if (name.str() == "weight") {
      if (!field.is_number())
        fail("{}[{}].weight: expected a number, got {} ({})", k.info.path, i, node_text(field),
             where);
      s.weight = *field.value<double>();
    } else {
      fail("{}[{}]: unknown field '{}' (expected path and weight) ({})", k.info.path, i, name.str(),
           where);
    }
  }
  if (!has_path) fail("{}[{}]: expected a path field ({})", k.info.path, i, where);
  check_source(k, i, s);
  return s;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// "a,b,c" (an empty value: no items) -> the items, spaces around each dropped.
std::vector<std::string_view> split_items(std::string_view value) {
  std::vector<std::string_view> items;
  std::size_t p = 0;
  while (!value.empty() && p <= value.size()) {
    const std::size_t q = std::min(value.find(',', p), value.size());
    items.push_back(trimmed(value.substr(p, q - p)));
    p = q + 1;
  }
  return items;
}

// One --set item of data.sources: path[:weight], split at the last ':' (a path may hold ':').
data_source source_from_text(const key& k, std::size_t i, std::string_view item) {
  if (item.empty()) fail("{}[{}]: expected path[:weight], got an empty item", k.info.path, i);
  data_source s;
  const std::size_t colon = item.rfind(':');
  s.path = std::string(item.substr(0, colon));
  if (colon != std::string_view::npos) {
    const std::string_view w = item.substr(colon + 1);
    auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), s.weight);
    if (ec != std::errc() || end != w.data() + w.size())
      fail(
          "{}: expected path:weight with a number after the last ':', got '{}' (a path that "
          "holds ':' needs the weight: '{}:1')",
          source_name(k, i, s), w, item);
  }
  check_source(k, i, s);
  return s;
}

// 1,2,3 or [1, 2, 3] (TOML) -> the TOML node's items.
std::optional<toml::table> toml_value(const key& k, const std::string& value) {
  if (value.empty() || value.front() != '[') return std::nullopt;
  try {
    return toml::parse(std::string_view("v = " + value), std::string_view("--set"));
  } catch (const toml::parse_error& e) {
    fail("{}: expected a TOML list, got '{}' ({})", k.info.path, value, e.description());
  }
}

}  // namespace

void set_items_from_toml(run_config& c, const key& k, const toml::node& n,
                         const std::string& where) {
  if (k.info.kind == key_kind::integer_list) {
    as<std::vector<int64_t>>(c, k) = int_items_from_toml(k, n, where);
    return;
  }
  const toml::array* a = n.as_array();
  if (!a)
    fail("{}: expected a list of {{path = \"...\", weight = ...}} tables, got {} ({})", k.info.path,
         node_text(n), where);
  std::vector<data_source> v;
  for (std::size_t i = 0; i < a->size(); ++i)
    v.push_back(source_from_toml(k, i, *a->get(i), where));
  as<std::vector<data_source>>(c, k) = std::move(v);
}

void set_items_from_text(run_config& c, const key& k, const std::string& value) {
  if (auto t = toml_value(k, value)) {
    set_items_from_toml(c, k, *(*t)["v"].node(), "--set");
    return;
  }
  const std::vector<std::string_view> items = split_items(value);
  if (k.info.kind == key_kind::source_list) {
    std::vector<data_source> v;
    for (std::size_t i = 0; i < items.size(); ++i) v.push_back(source_from_text(k, i, items[i]));
    as<std::vector<data_source>>(c, k) = std::move(v);
    return;
  }
  std::vector<int64_t> v;
  for (std::size_t i = 0; i < items.size(); ++i) {
    int64_t x = 0;
    const std::string_view s = items[i];
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size())
      fail("{}[{}]: expected an integer, got '{}'", k.info.path, i, s);
    check_int_item(k, i, x);
    v.push_back(x);
  }
  as<std::vector<int64_t>>(c, k) = std::move(v);
}

std::string items_text(run_config& c, const key& k) {
  std::string s;
  if (k.info.kind == key_kind::integer_list) {
    for (int64_t x : as<std::vector<int64_t>>(c, k))
      s += fmt::format("{}{}", s.empty() ? "" : ", ", x);
  } else {
    for (const data_source& d : as<std::vector<data_source>>(c, k))
      s += fmt::format("{}{{path = {}, weight = {}}}", s.empty() ? "" : ", ", toml_quoted(d.path),
                       toml_number(d.weight));
  }
  return "[" + s + "]";
}

void check_items(run_config& c, const key& k) {
  if (k.info.kind == key_kind::integer_list) {
    const auto& v = as<std::vector<int64_t>>(c, k);
    for (std::size_t i = 0; i < v.size(); ++i) check_int_item(k, i, v[i]);
    return;
  }
  const auto& v = as<std::vector<data_source>>(c, k);
  for (std::size_t i = 0; i < v.size(); ++i) check_source(k, i, v[i]);
}

std::vector<key> train_efficiency_keys() {
  return {
      wide(ZF_INT("train.tokens", train.tokens, 0, 1e15,
                  "> 0: the run ends after the step that reaches this many tokens (train.steps "
                  "stays the upper bound); 0 = train.steps decides")),
      ZF_BOOL("train.random_ltd.enabled", train.random_ltd.enabled,
              "random-LTD (arXiv 2211.11586): middle layers see a random subset of the tokens"),
      ZF_INTS("train.random_ltd.layers", train.random_ltd.layers, 0, 255,
              "layer ids that drop tokens; [] = all but the first and the last"),
      ZF_INT("train.random_ltd.min_tokens", train.random_ltd.min_tokens, 0, 1 << 20,
             "tokens kept at step 0 (at most train.seq_len); 0 = train.seq_len / 2"),
      wide(ZF_INT("train.random_ltd.total_steps", train.random_ltd.total_steps, 0, 1e9,
                  "steps until every token is kept; 0 = train.steps / 2")),
      ZF_INT("train.random_ltd.step_size", train.random_ltd.step_size, 1, 1 << 20,
             "kept tokens move in multiples of this"),
  };
}

std::vector<key> data_keys() {
  std::vector<key> k = {
      ZF_STR("data.corpus", data.corpus,
             "\"moby-dick\", \"kjv-bible\" or \"sotu\" (fetched by scripts/setup), a UTF-8 .txt "
             "file or a .tok token shard"),
      ZF_STR("data.tokenizer", data.tokenizer,
             "\"gpt2\" or a folder with a Hugging Face tokenizer.json"),
      ZF_STR("data.data_dir", data.data_dir,
             "folder with the fetched corpus and tokenizer; empty = the build's"),
      ZF_NUM("data.val_fraction", data.val_fraction, 0, 0.5,
             "tail fraction of the corpus held out"),
      ZF_NUM("data.max_invalid_utf8", data.max_invalid_utf8, 0, 1,
             "largest share of a text corpus's bytes that may be invalid UTF-8 or NUL (1 = any)"),
      ZF_SOURCES("data.sources", data.sources,
                 "corpora blended by weight in place of data.corpus, [{path = \"moby-dick\", "
                 "weight = 2}, ...] (--set moby-dick:2,kjv-bible:1); [] = data.corpus alone"),
      wide(ZF_INT("data.blend_seed", data.blend_seed, 0, 9.2e18,
                  "seed of the blend's chunk order (the same blend for every train.seed)")),
      ZF_ENUM("data.curriculum.seqlen_mode", data.curriculum.seqlen_mode,
              "seqlen curriculum: truncate (rows of the difficulty's length, fewer tokens per "
              "step) or reshape (the step's tokens packed into rows of that length)",
              "truncate", "reshape"),
  };
  for (auto [name, m] : {std::pair<std::string, metric_ptr>{"seqlen", &curriculum_config::seqlen},
                         {"vocab_rarity", &curriculum_config::vocab_rarity},
                         {"custom", &curriculum_config::custom}})
    for (auto& mk : metric_keys(name, m)) k.push_back(std::move(mk));
  return k;
}

namespace {

void validate_curriculum(const run_config& c) {
  const curriculum_config& cu = c.data.curriculum;
  const int seq = c.train.seq_len;
  if (cu.seqlen.enabled) {
    const metric_curriculum& s = cu.seqlen;
    if (s.difficulty_type != "value")
      fail(
          "data.curriculum.seqlen.difficulty_type: expected \"value\" (the difficulty is a "
          "sequence length), got \"{}\"",
          s.difficulty_type);
    if (s.min_difficulty < 1 || s.min_difficulty > seq)
      fail("data.curriculum.seqlen.min_difficulty: expected 1..train.seq_len ({}), got {}", seq,
           s.min_difficulty);
    if (s.max_difficulty > seq)
      fail(
          "data.curriculum.seqlen.max_difficulty: expected at most train.seq_len ({}; 0 = "
          "train.seq_len), got {}",
          seq, s.max_difficulty);
  }
  for (auto [name, m] : {std::pair<const char*, const metric_curriculum*>{"seqlen", &cu.seqlen},
                         {"vocab_rarity", &cu.vocab_rarity},
                         {"custom", &cu.custom}})
    if (m->enabled && m->difficulty_type == "percentile" && m->max_difficulty > 100)
      fail("data.curriculum.{}.max_difficulty: expected at most 100 (a percentile), got {}", name,
           m->max_difficulty);
}

void validate_random_ltd(const run_config& c) {
  const random_ltd_config& r = c.train.random_ltd;
  if (!r.enabled) return;
  if (r.min_tokens > c.train.seq_len)
    fail("train.random_ltd.min_tokens: expected at most train.seq_len ({}), got {}",
         c.train.seq_len, r.min_tokens);
  for (std::size_t i = 0; i < r.layers.size(); ++i)
    if (r.layers[i] < 0 || r.layers[i] >= c.model.n_layer)
      fail("train.random_ltd.layers[{}]: expected 0..{} (model.n_layer is {}), got {}", i,
           c.model.n_layer - 1, c.model.n_layer, r.layers[i]);
}

// train.tokens must be reachable within train.steps full steps (a seqlen curriculum's short
// steps only need more of them: the trainer stops at the step that reaches the count).
void validate_tokens(const run_config& c) {
  const train_config& t = c.train;
  if (t.tokens <= 0) return;
  using u128 = unsigned __int128;  // steps * tokens per step overflows int64 at the ranges' ends
  const u128 per_step = u128(t.batch_size) * u128(t.seq_len) * u128(t.grad_accum) * u128(t.ranks);
  const u128 need = (u128(t.tokens) + per_step - 1) / per_step;
  if (u128(t.steps) < need)
    fail(
        "train.tokens: {} tokens need train.steps >= {} at {} tokens per step (train.batch_size * "
        "seq_len * grad_accum * ranks), got train.steps = {}: raise train.steps",
        t.tokens, static_cast<uint64_t>(need), static_cast<uint64_t>(per_step), t.steps);
}

}  // namespace

void validate_data(const run_config& c) {
  if (!c.data.sources.empty() && c.data.corpus != data_config{}.corpus)
    fail(
        "data.sources and data.corpus are both given (data.corpus = \"{}\"): data.sources blends "
        "its corpora in place of data.corpus; set only one of them",
        c.data.corpus);
  validate_tokens(c);
  validate_random_ltd(c);
  validate_curriculum(c);
}

}  // namespace zf::config_detail
