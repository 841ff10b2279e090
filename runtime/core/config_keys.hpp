#pragma once
// The configuration schema's building blocks, shared by the files that declare keys
// (config.cpp: model, train, data, serve; config_rlhf.cpp: rlhf). Internal to runtime/core.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/config.hpp"

namespace zf::config_detail {

// One declared key: where it lives in run_config, its kind and range or choices, its help.
// Integer keys hold an int, except those marked wide (int64_t: the seed).
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

std::vector<key> rlhf_keys();  // config_rlhf.cpp

}  // namespace zf::config_detail
