#pragma once
// The configuration schema's building blocks, shared by the files that declare keys
// (config.cpp: model, train, serve; config_data.cpp: data, issue 13's train keys and the list
// kinds beyond strings; config_rlhf.cpp: rlhf). Internal to runtime/core.
#include <toml++/toml.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/config.hpp"
#include "runtime/core/model_spec.hpp"

namespace zf::config_detail {

// One declared key: where it lives in run_config, its kind and range or choices, its help.
// Integer keys hold an int, except those marked wide (int64_t: the seed); integer_list keys a
// std::vector<int64_t> (lo..hi bounds each item); source_list keys a std::vector<data_source>.
struct key {
  key_info info;
  std::function<void*(run_config&)> ref;
  bool wide = false;
};

template <class T>
inline T& as(run_config& c, const key& k) {
  return *static_cast<T*>(k.ref(c));
}

inline key make_key(std::string path, key_kind kind, std::function<void*(run_config&)> ref,
                    double lo, double hi, std::string help, std::vector<std::string> choices = {}) {
  return key{key_info{std::move(path), kind, std::move(help), std::move(choices), lo, hi},
             std::move(ref)};
}

#define ZF_REF(field) [](run_config& c) -> void* { return &c.field; }
#define ZF_INT(path, field, lo, hi, help) \
  make_key(path, key_kind::integer, ZF_REF(field), lo, hi, help)
#define ZF_NUM(path, field, lo, hi, help) \
  make_key(path, key_kind::number, ZF_REF(field), lo, hi, help)
#define ZF_STR(path, field, help) make_key(path, key_kind::string, ZF_REF(field), 0, 0, help)
#define ZF_BOOL(path, field, help) make_key(path, key_kind::boolean, ZF_REF(field), 0, 1, help)
#define ZF_ENUM(path, field, help, ...) \
  make_key(path, key_kind::choice, ZF_REF(field), 0, 0, help, {__VA_ARGS__})
#define ZF_LIST(path, field, help) make_key(path, key_kind::list, ZF_REF(field), 0, 0, help)
#define ZF_INTS(path, field, lo, hi, help) \
  make_key(path, key_kind::integer_list, ZF_REF(field), lo, hi, help)
#define ZF_SOURCES(path, field, help) \
  make_key(path, key_kind::source_list, ZF_REF(field), 0, 0, help)

inline key wide(key k) {  // an integer key held as int64_t
  k.wide = true;
  return k;
}

std::vector<key> rlhf_keys();  // config_rlhf.cpp
// config_moe.cpp: the model.moe.* keys, their cross-key checks (validate()) and the moe_spec
// they give (spec_of) and come from (config_of).
std::vector<key> moe_keys();
void validate_moe(const run_config& c);
void moe_spec_of(const model_config& m, int intermediate, moe_spec& out);
void moe_config_of(const moe_spec& s, int intermediate, moe_config& out);

// config_data.cpp: the data.* keys, and the train.* keys of issue 13 (train.tokens,
// train.random_ltd.*), which train_keys() places among the other train.* keys (one [train]).
std::vector<key> data_keys();
std::vector<key> train_efficiency_keys();
std::vector<key> precision_keys();  // config_precision.cpp
// train.device's cross-key checks (validate(); config_precision.cpp): what a cuda run cannot do
// yet, refused by name before anything starts (whether a GPU is there is the run's check).
void validate_device(const run_config& c);
// The integer_list and source_list kinds: from a TOML node (where: the file, for messages), from
// --set's text, as TOML text, and validate()'s check of values set on the struct directly. Each
// zf::error names the key and the item; a refused value leaves the key as it was.
void set_items_from_toml(run_config& c, const key& k, const toml::node& n,
                         const std::string& where);
void set_items_from_text(run_config& c, const key& k, const std::string& value);
std::string items_text(run_config& c, const key& k);
void check_items(run_config& c, const key& k);
// The cross-key checks of the data and issue 13 keys (validate()).
void validate_data(const run_config& c);
// Shared with config.cpp: TOML text of a string / a float (always with a '.', 'e' or "nan").
std::string toml_quoted(const std::string& s);
std::string toml_number(double v);
std::string node_text(const toml::node& n);

}  // namespace zf::config_detail
