#pragma once
// Shared by the GGUF tests (test_gguf.cpp, test_gguf_refusals.cpp, test_gguf_model.cpp,
// test_gguf_llama.cpp): a GGUF file built field by field, parsing from memory, raw file reads and
// writes, metadata of every type, a set of tensors to round-trip, a file rewritten with edits and
// a model's logits.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"
#include "storage/gguf.hpp"
#include "test_util.hpp"

namespace zf::testing::gguf_fixtures {

namespace fs = std::filesystem;
using zf::storage::gguf_file;
using zf::storage::gguf_kv;
using zf::storage::gguf_value;
using zf::storage::gguf_write;
namespace gt = zf::storage::ggml_types;

// A GGUF file built field by field (little-endian, as the format is).
struct bytes_builder {
  std::string b;
  template <class T>
  bytes_builder& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  bytes_builder& u8(uint8_t v) { return put(v); }
  bytes_builder& u32(uint32_t v) { return put(v); }
  bytes_builder& u64(uint64_t v) { return put(v); }
  bytes_builder& raw(std::string_view s) {
    b.append(s);
    return *this;
  }
  bytes_builder& str(std::string_view s) { return u64(s.size()).raw(s); }
  // "GGUF", version, tensor count, key/value count.
  bytes_builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
  }
  bytes_builder& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
  bytes_builder& kv_str(std::string_view key, std::string_view v) { return str(key).u32(8).str(v); }
  bytes_builder& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type,
                        uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  bytes_builder& pad(std::size_t align) {
    b.append((align - b.size() % align) % align, '\0');
    return *this;
  }
  bytes_builder& fill(std::size_t n, uint8_t first) {  // n bytes first, first + 1, ...
    for (std::size_t i = 0; i < n; ++i) b.push_back(static_cast<char>(first + i));
    return *this;
  }
};

inline gguf_file parse(const std::string& bytes) {
  return gguf_file::from_bytes(std::string_view(bytes), "hand.gguf");
}

inline std::string parse_error(const std::string& bytes) {
  return error_of([&] { (void)parse(bytes); });
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Every metadata type, arrays of each, nested arrays, unicode and empty strings.
inline std::vector<gguf_kv> every_type() {
  return {
      {"general.architecture", gguf_value::string("llama")},
      {"t.u8", gguf_value::u8(200)},
      {"t.i8", gguf_value::i8(-100)},
      {"t.u16", gguf_value::u16(65535)},
      {"t.i16", gguf_value::i16(-32768)},
      {"t.u32", gguf_value::u32(4000000000u)},
      {"t.i32", gguf_value::i32(-2000000000)},
      {"t.f32", gguf_value::f32(-1.5f)},
      {"t.bool_true", gguf_value::boolean(true)},
      {"t.bool_false", gguf_value::boolean(false)},
      {"t.u64", gguf_value::u64(9000000000000000000ull)},
      {"t.i64", gguf_value::i64(-9000000000000000000ll)},
      {"t.f64", gguf_value::f64(3.0000000000000004)},
      {"t.unicode", gguf_value::string("h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80")},
      {"t.empty", gguf_value::string("")},
      {"t.nul", gguf_value::string(std::string("a\0b", 3))},
      {"a.u8", gguf_value::array(std::vector<uint8_t>{0, 1, 255})},
      {"a.i8", gguf_value::array(std::vector<int8_t>{-128, 127})},
      {"a.u16", gguf_value::array(std::vector<uint16_t>{1, 65535})},
      {"a.i16", gguf_value::array(std::vector<int16_t>{-2, 3})},
      {"a.u32", gguf_value::array(std::vector<uint32_t>{7, 4294967295u})},
      {"a.i32", gguf_value::array(std::vector<int32_t>{-1, 0, 1})},
      {"a.f32", gguf_value::array(std::vector<float>{0.25f, -8.f})},
      {"a.bool", gguf_value::bool_array({true, false, true})},
      {"a.u64", gguf_value::array(std::vector<uint64_t>{1ull << 40})},
      {"a.i64", gguf_value::array(std::vector<int64_t>{-(1ll << 50), 5})},
      {"a.f64", gguf_value::array(std::vector<double>{1e300, -0.5})},
      {"a.str", gguf_value::string_array({"<s>", "</s>", "\xc4\xa0the", ""})},
      {"a.empty", gguf_value::array(std::vector<int32_t>{})},
      {"a.nested", gguf_value::array_of_arrays({
                       gguf_value::array(std::vector<int32_t>{1, 2}),
                       gguf_value::string_array({"x", "\xc3\xbc"}),
                       gguf_value::array_of_arrays({gguf_value::array(std::vector<double>{0.5}),
                                                    gguf_value::array_of_arrays({})}),
                       gguf_value::array(std::vector<uint8_t>{}),
                   })},
  };
}

// The tensors of the round trips: F32, F16, Q8_0 and Q4_0 (block bytes as given), an empty one
// and a scalar; `raw` holds their bytes.
struct tensor_set {
  std::vector<std::vector<uint8_t>> raw;
  std::vector<gguf_write> tensors;
};

inline tensor_set make_tensors() {
  tensor_set s;
  auto add = [&](std::string name, uint32_t type, std::vector<uint64_t> dims, std::size_t n,
                 uint8_t seed) {
    std::vector<uint8_t> b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 7 * i);
    s.raw.push_back(std::move(b));
    s.tensors.push_back({std::move(name), type, std::move(dims), nullptr, n});
  };
  add("token_embd.weight", gt::F32, {3, 2}, 6 * 4, 1);
  add("blk.0.attn_norm.weight", gt::F16, {4}, 4 * 2, 2);
  add("blk.0.attn_q.weight", gt::Q8_0, {64, 2}, 4 * 34, 3);
  add("blk.0.ffn_up.weight", gt::Q4_0, {32, 3}, 3 * 18, 4);
  add("empty", gt::F32, {0, 4}, 0, 5);
  add("scale", gt::F32, {}, 4, 6);
  for (std::size_t i = 0; i < s.tensors.size(); ++i)
    s.tensors[i].data = s.raw[i].empty() ? nullptr : s.raw[i].data();
  return s;
}

// Logits of a short sequence under w (the score mode's forward).
inline std::vector<float> logits_of(const lm_weights& w, const std::vector<int>& ids) {
  transformer t(w.cfg, true, false);
  std::memcpy(t.params().data(), w.store.data(), w.store.size() * sizeof(float));
  if (w.quant) t.set_quant(w.quant);  // in place: the file's matrices
  t.forward(ids.data(), nullptr, 1, int(ids.size()));
  return {t.logits(), t.logits() + ids.size() * std::size_t(w.cfg.vocab_size)};
}

// Rewrites `from` into `to` with fix applied to its metadata and tensor list.
inline void rewrite(const std::filesystem::path& from, const std::filesystem::path& to,
                    const std::function<void(std::vector<storage::gguf_kv>&,
                                             std::vector<storage::gguf_write>&)>& fix) {
  const auto g = storage::gguf_file::open(from);
  std::vector<storage::gguf_kv> md = g.metadata();
  std::vector<storage::gguf_write> ts;
  for (const auto& t : g.tensors()) ts.push_back({t.name, t.type, t.dims, t.data, t.nbytes});
  fix(md, ts);
  storage::write_gguf(to, md, ts);
}

}  // namespace zf::testing::gguf_fixtures
