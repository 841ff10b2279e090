// GGUF reader/writer (storage/gguf): the ggml type table, round trips of every metadata type
// and of F32/F16/Q8_0/Q4_0 tensors at several alignments, headers built byte by byte here and
// read field by field, the writer's exact bytes, every refusal with its message, and truncated or
// corrupted files (never a crash, always zf::error).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/gguf.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::gguf_file;
using zf::storage::gguf_kv;
using zf::storage::gguf_type;
using zf::storage::gguf_value;
using zf::storage::gguf_write;
using zf::storage::write_gguf;
namespace gt = zf::storage::ggml_types;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

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

gguf_file parse(const std::string& bytes) {
  return gguf_file::from_bytes(std::string_view(bytes), "hand.gguf");
}

std::string parse_error(const std::string& bytes) {
  return error_of([&] { (void)parse(bytes); });
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Every metadata type, arrays of each, nested arrays, unicode and empty strings.
std::vector<gguf_kv> every_type() {
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

}  // namespace

TEST_CASE("gguf: ggml type table agrees with ggml") {
  using zf::storage::ggml_type_info;
  struct row {
    uint32_t id;
    const char* name;
    uint32_t block, bytes;
  };
  const row rows[] = {
      {0, "F32", 1, 4},         {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
      {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
      {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
      {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292}, {20, "IQ4_NL", 32, 18},
      {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {26, "I32", 1, 4},
      {28, "F64", 1, 8},        {30, "BF16", 1, 2},     {39, "MXFP4", 32, 17},
  };
  for (const row& r : rows) {
    CAPTURE(r.id);
    const auto* t = ggml_type_info(r.id);
    REQUIRE(t != nullptr);
    CHECK(std::string(t->name) == r.name);
    CHECK(t->block == r.block);
    CHECK(t->bytes == r.bytes);
  }
  for (uint32_t gone : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u, 0xFFFFFFFFu})
    CHECK(ggml_type_info(gone) == nullptr);

  using zf::storage::ggml_nbytes;
  const std::vector<uint64_t> q8 = {64, 3};
  CHECK(ggml_nbytes(gt::Q8_0, q8) == std::optional<uint64_t>(2 * 3 * 34));
  const std::vector<uint64_t> k = {512, 2};
  CHECK(ggml_nbytes(gt::Q4_K, k) == std::optional<uint64_t>(4 * 144));
  CHECK(ggml_nbytes(gt::Q6_K, k) == std::optional<uint64_t>(4 * 210));
  const std::vector<uint64_t> odd = {33};
  CHECK(ggml_nbytes(gt::Q8_0, odd) == std::nullopt);
  CHECK(ggml_nbytes(gt::F32, odd) == std::optional<uint64_t>(132));
  CHECK(ggml_nbytes(gt::F32, {}) == std::optional<uint64_t>(4));  // a scalar
  const std::vector<uint64_t> huge = {1ull << 40, 1ull << 40};
  CHECK(ggml_nbytes(gt::F32, huge) == std::nullopt);
  CHECK(ggml_nbytes(4, odd) == std::nullopt);
}

TEST_CASE("gguf: round trip of every metadata type") {
  temp_dir dir("gguf_meta");
  const fs::path p = dir / "meta.gguf";
  const auto meta = every_type();
  write_gguf(p, meta, {});
  CHECK_FALSE(fs::exists(dir / "meta.gguf.tmp"));

  const auto f = gguf_file::open(p);
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.tensors().empty());
  REQUIRE(f.metadata().size() == meta.size());
  for (std::size_t i = 0; i < meta.size(); ++i) {
    CAPTURE(meta[i].key);
    CHECK(f.metadata()[i].key == meta[i].key);
    CHECK(f.metadata()[i].value == meta[i].value);
  }
  const auto keys = f.keys();
  REQUIRE(keys.size() == meta.size());
  CHECK(keys[0] == "general.architecture");
  CHECK(keys[13] == "t.unicode");
  CHECK(keys.back() == "a.nested");

  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_int("t.u8") == 200);
  CHECK(f.get_int("t.i8") == -100);
  CHECK(f.get_int("t.u16") == 65535);
  CHECK(f.get_int("t.i16") == -32768);
  CHECK(f.get_int("t.u32") == 4000000000ll);
  CHECK(f.get_int("t.i32") == -2000000000);
  CHECK(f.get_int("t.u64") == 9000000000000000000ll);
  CHECK(f.get_int("t.i64") == -9000000000000000000ll);
  CHECK(f.get_float("t.f32") == -1.5);
  CHECK(f.get_float("t.f64") == 3.0000000000000004);
  CHECK(f.get_bool("t.bool_true"));
  CHECK_FALSE(f.get_bool("t.bool_false"));
  CHECK(f.get_string("t.unicode") == "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80");
  CHECK(f.get_string("t.empty").empty());
  CHECK(f.get_string("t.nul") == std::string("a\0b", 3));
  CHECK(f.get_ints("a.u8") == std::vector<int64_t>{0, 1, 255});
  CHECK(f.get_ints("a.i8") == std::vector<int64_t>{-128, 127});
  CHECK(f.get_ints("a.u16") == std::vector<int64_t>{1, 65535});
  CHECK(f.get_ints("a.i16") == std::vector<int64_t>{-2, 3});
  CHECK(f.get_ints("a.u32") == std::vector<int64_t>{7, 4294967295ll});
  CHECK(f.get_ints("a.i32") == std::vector<int64_t>{-1, 0, 1});
  CHECK(f.get_ints("a.u64") == std::vector<int64_t>{1ll << 40});
  CHECK(f.get_ints("a.i64") == std::vector<int64_t>{-(1ll << 50), 5});
  CHECK(f.get_ints("a.empty").empty());
  CHECK(f.get_floats("a.f32") == std::vector<double>{0.25, -8.0});
  CHECK(f.get_floats("a.f64") == std::vector<double>{1e300, -0.5});
  CHECK(f.get_strings("a.str") == std::vector<std::string>{"<s>", "</s>", "\xc4\xa0the", ""});
  const gguf_value& b = f.value("a.bool");
  CHECK(b.elem_type() == gguf_type::boolean);
  CHECK(b.size() == 3);
  CHECK(b.array_bytes() == std::vector<std::byte>{std::byte{1}, std::byte{0}, std::byte{1}});

  const gguf_value& n = f.value("a.nested");
  CHECK(n.type() == gguf_type::array);
  CHECK(n.elem_type() == gguf_type::array);
  const auto* items = n.as_arrays();
  REQUIRE(items != nullptr);
  REQUIRE(items->size() == 4);
  CHECK((*items)[0].as_ints() == std::vector<int64_t>{1, 2});
  REQUIRE((*items)[1].as_strings() != nullptr);
  CHECK(*(*items)[1].as_strings() == std::vector<std::string>{"x", "\xc3\xbc"});
  const auto* inner = (*items)[2].as_arrays();
  REQUIRE(inner != nullptr);
  REQUIRE(inner->size() == 2);
  CHECK((*inner)[0].as_floats() == std::vector<double>{0.5});
  REQUIRE((*inner)[1].as_arrays() != nullptr);
  CHECK((*inner)[1].as_arrays()->empty());
  CHECK((*items)[3].size() == 0);
  CHECK((*items)[3].elem_type() == gguf_type::u8);

  // Scalar accessors refuse the other kinds.
  CHECK(f.value("t.f32").as_int() == std::nullopt);
  CHECK(f.value("t.u8").as_float() == std::nullopt);
  CHECK(f.value("t.u8").as_string() == nullptr);
  CHECK(f.value("a.f32").as_ints() == std::nullopt);
  CHECK(f.value("a.i32").as_floats() == std::nullopt);
  CHECK(f.value("a.i32").as_strings() == nullptr);
  CHECK(f.find_value("absent") == nullptr);
  CHECK_FALSE(f.has("absent"));
  CHECK(f.has("t.u8"));

  // No tensors: the file ends with the padding after the metadata (as ggml writes it).
  const std::string bytes = read_file(p);
  CHECK(bytes.size() % 32 == 0);
  CHECK(f.data_offset() == bytes.size());
  const auto g = gguf_file::from_bytes(std::string_view(bytes), "copy.gguf");
  CHECK(g.metadata() == f.metadata());
}

namespace {

// The tensors of the round trips: F32, F16, Q8_0 and Q4_0 (block bytes as given), an empty one
// and a scalar; `raw` holds their bytes.
struct tensor_set {
  std::vector<std::vector<uint8_t>> raw;
  std::vector<gguf_write> tensors;
};

tensor_set make_tensors() {
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

uint64_t round_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

}  // namespace

TEST_CASE("gguf: round trip of F32, F16, Q8_0 and Q4_0 tensors at alignments 1, 8, 32 and 64") {
  temp_dir dir("gguf_tensors");
  const tensor_set s = make_tensors();
  for (uint32_t align : {1u, 8u, 32u, 64u}) {
    CAPTURE(align);
    const fs::path p = dir / fmt::format("t{}.gguf", align);
    write_gguf(p, {{"general.architecture", gguf_value::string("llama")}}, s.tensors, align);
    CHECK_FALSE(fs::exists(dir / fmt::format("t{}.gguf.tmp", align)));

    auto f = gguf_file::open(p);
    CHECK(f.version() == 3);
    CHECK(f.alignment() == align);
    if (align == 32) {
      CHECK(f.metadata().size() == 1);  // the default alignment is not written
    } else {
      REQUIRE(f.metadata().size() == 2);
      CHECK(f.metadata()[1].key == "general.alignment");
      CHECK(f.value("general.alignment").type() == gguf_type::u32);
      CHECK(f.get_int("general.alignment") == align);
    }
    CHECK(f.data_offset() % align == 0);
    REQUIRE(f.tensors().size() == s.tensors.size());
    uint64_t off = 0;
    for (std::size_t i = 0; i < s.tensors.size(); ++i) {
      const gguf_write& w = s.tensors[i];
      const auto& t = f.tensors()[i];  // header order is the given order
      CAPTURE(w.name);
      CHECK(t.name == w.name);
      CHECK(t.type == w.type);
      CHECK(t.dims == w.dims);
      CHECK(t.offset == off);
      CHECK(t.offset % align == 0);
      REQUIRE(t.nbytes == w.nbytes);
      if (w.nbytes) CHECK(std::memcmp(t.data, w.data, w.nbytes) == 0);
      CHECK(t.data == f.tensors()[0].data + t.offset);
      CHECK(f.find(w.name) == &t);
      CHECK(&f.at(w.name) == &t);
      off += round_up(w.nbytes, align);
    }
    CHECK(f.tensors()[2].n_elements() == 128);
    CHECK(f.tensors()[4].n_elements() == 0);
    CHECK(f.tensors()[5].n_elements() == 1);
    // Every tensor padded to the alignment, the last one too (as ggml writes).
    CHECK(fs::file_size(p) == f.data_offset() + off);

    // Moving keeps the mapping (and the data pointers) alive.
    const std::byte* before = f.at("blk.0.attn_q.weight").data;
    gguf_file g = std::move(f);
    CHECK(g.at("blk.0.attn_q.weight").data == before);
    CHECK(static_cast<uint8_t>(before[1]) == static_cast<uint8_t>(3 + 7));
  }
}

TEST_CASE("gguf: a header built byte by byte is read field by field") {
  for (uint32_t version : {2u, 3u}) {
    CAPTURE(version);
    bytes_builder h;
    h.header(3, 3, version)
        .kv_str("general.architecture", "llama")
        .kv_u32("general.alignment", 16)
        .str("tok.ids")
        .u32(9)  // array
        .u32(5)  // of int32
        .u64(3)
        .put<int32_t>(-1)
        .put<int32_t>(0)
        .put<int32_t>(7);
    h.tensor("a", {2, 3}, gt::F32, 0)
        .tensor("b", {32}, gt::Q8_0, 32)
        .tensor("e", {4, 0}, gt::F16, 32);
    const std::size_t header_end = h.b.size();
    h.pad(16);
    const std::size_t data_start = h.b.size();
    h.fill(24, 1).pad(16).fill(34, 100).pad(16);
    const auto f = parse(h.b);

    CHECK(f.version() == version);
    CHECK(f.alignment() == 16);
    CHECK(data_start == round_up(header_end, 16));
    CHECK(f.data_offset() == data_start);
    CHECK(f.keys() ==
          std::vector<std::string_view>{"general.architecture", "general.alignment", "tok.ids"});
    CHECK(f.get_string("general.architecture") == "llama");
    CHECK(f.get_int("general.alignment") == 16);
    CHECK(f.get_ints("tok.ids") == std::vector<int64_t>{-1, 0, 7});
    CHECK(f.value("tok.ids").elem_type() == gguf_type::i32);

    REQUIRE(f.tensors().size() == 3);
    const auto& a = f.tensors()[0];
    CHECK(a.name == "a");
    CHECK(a.type == gt::F32);
    CHECK(a.dims == std::vector<uint64_t>{2, 3});
    CHECK(a.offset == 0);
    CHECK(a.nbytes == 24);
    CHECK(a.n_elements() == 6);
    CHECK(static_cast<uint8_t>(a.data[0]) == 1);
    CHECK(static_cast<uint8_t>(a.data[23]) == 24);
    const auto& b = f.tensors()[1];
    CHECK(b.name == "b");
    CHECK(b.type == gt::Q8_0);
    CHECK(b.offset == 32);
    CHECK(b.nbytes == 34);
    CHECK(b.data == a.data + 32);
    CHECK(static_cast<uint8_t>(b.data[0]) == 100);
    CHECK(static_cast<uint8_t>(b.data[33]) == 133);
    const auto& e = f.tensors()[2];
    CHECK(e.type == gt::F16);
    CHECK(e.nbytes == 0);
    CHECK(e.n_elements() == 0);

    // The same bytes through open() (mmap).
    temp_dir dir("gguf_hand");
    write_raw(dir / "hand.gguf", h.b);
    const auto g = gguf_file::open(dir / "hand.gguf");
    CHECK(g.metadata() == f.metadata());
    REQUIRE(g.tensors().size() == 3);
    CHECK(std::memcmp(g.at("b").data, b.data, 34) == 0);
  }
}

TEST_CASE("gguf: the writer's bytes, field by field") {
  temp_dir dir("gguf_bytes");
  const fs::path p = dir / "w.gguf";
  const std::vector<float> w = {1.f, 2.f};
  write_gguf(p,
             {{"general.architecture", gguf_value::string("x")},
              {"n", gguf_value::array_of_arrays({gguf_value::bool_array({true})})}},
             {{"w", gt::F32, {2}, w.data(), 8}});
  bytes_builder e;
  e.header(1, 2).kv_str("general.architecture", "x");
  e.str("n").u32(9).u32(9).u64(1).u32(7).u64(1).u8(1);
  e.tensor("w", {2}, gt::F32, 0).pad(32).put(1.f).put(2.f).pad(32);
  const std::string got = read_file(p);
  CHECK(got.size() == 192);
  CHECK(got == e.b);

  // An alignment other than 32 is recorded as general.alignment (uint32), after the metadata.
  write_gguf(p, {{"k", gguf_value::u8(1)}}, {{"w", gt::F32, {2}, w.data(), 8}}, 8);
  bytes_builder e8;
  e8.header(1, 2).str("k").u32(0).u8(1).kv_u32("general.alignment", 8);
  e8.tensor("w", {2}, gt::F32, 0).pad(8).put(1.f).put(2.f);
  CHECK(read_file(p) == e8.b);

  // No tensors: still padded after the metadata.
  write_gguf(p, {}, {});
  bytes_builder e0;
  e0.header(0, 0).pad(32);
  CHECK(read_file(p) == e0.b);
  CHECK(gguf_file::open(p).metadata().empty());
}

namespace {

// A file of one tensor (name, dims, type, offset) after the given metadata, with `data` bytes in
// its data section (alignment 32 unless the metadata says otherwise).
std::string one_tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type,
                       uint64_t offset, std::size_t data, uint32_t align = 32) {
  bytes_builder h;
  h.header(1, align == 32 ? 0 : 1);
  if (align != 32) h.kv_u32("general.alignment", align);
  h.tensor(name, std::move(dims), type, offset).pad(align).fill(data, 0);
  return h.b;
}

// The message of parsing `bytes`, checked to name the file and `what` (a key or tensor).
std::string refusal(const std::string& bytes, std::string_view what) {
  const std::string m = parse_error(bytes);
  CAPTURE(m);
  CHECK(contains(m, "gguf file 'hand.gguf'"));
  CHECK(contains(m, what));
  return m;
}

}  // namespace

TEST_CASE("gguf: refuses a bad header with a message naming the file") {
  bytes_builder ok;
  ok.header(0, 0);
  CHECK(parse(ok.b).metadata().empty());

  std::string m = refusal(bytes_builder{}.raw("GGUX").u32(3).u64(0).u64(0).b, "bad magic 'GGUX'");
  m = refusal(bytes_builder{}.raw("\x01GGU").u32(3).u64(0).u64(0).b, "bad magic '\\x01GGU'");
  m = refusal(bytes_builder{}.header(0, 0, 1).b, "version 1");
  m = refusal(bytes_builder{}.header(0, 0, 4).b, "unsupported GGUF version 4");
  m = refusal(bytes_builder{}.header(0, 0, 0).b, "unsupported GGUF version 0");
  m = refusal(bytes_builder{}.header(0, 0, 0x03000000).b, "big-endian");
  CHECK(contains(m, "0x03000000"));
  m = refusal(std::string("GGUF\x03\x00\x00", 7),
              "truncated: 7 bytes, shorter than the 24-byte header");
  m = refusal(bytes_builder{}.header(0, 1000000000000000000ull).b,
              "metadata key/value count 1000000000000000000 cannot fit in the 0 bytes");
  m = refusal(bytes_builder{}.header(3, 0).fill(70, 0).b,
              "tensor count 3 cannot fit in the 70 bytes after the header");
  m = refusal(bytes_builder{}.header(0xFFFFFFFFFFFFFFFFull, 0).b, "tensor count");
}

TEST_CASE("gguf: refuses bad metadata naming the key") {
  auto kv = [](auto&& add) {
    bytes_builder h;
    h.header(0, 1);
    add(h);
    return h.b;
  };
  std::string m = refusal(kv([](auto& h) { h.u64(1000).raw("abcdefgh"); }),
                          "metadata key #0: key length 1000 at offset 24 runs past the end "
                          "of the file (8 bytes left)");
  m = refusal(kv([](auto& h) { h.str("k").u32(8).u64(1ull << 60).raw("xy"); }),
              "key 'k': string length 1152921504606846976 at offset 37 runs past the end of the "
              "file (2 bytes left)");
  m = refusal(kv([](auto& h) { h.str("k").u32(13).u32(0); }), "key 'k': unknown value type 13");
  m = refusal(kv([](auto& h) { h.str("k").u32(9).u32(77).u64(0); }),
              "key 'k': unknown array element type 77");
  m = refusal(kv([](auto& h) { h.str("k").u32(9).u32(4).u64(1ull << 40).u32(1); }),
              "key 'k': array of 1099511627776 uint32 values");
  CHECK(contains(m, "cannot fit in the 4 bytes left"));
  m = refusal(kv([](auto& h) { h.str("k").u32(9).u32(8).u64(2).str("abcdefghijklmn"); }),
              "key 'k': truncated: string length needs 8 bytes");
  m = refusal(kv([](auto& h) { h.str("k").u32(9).u32(8).u64(1ull << 61).u64(0); }),
              "key 'k': array of 2305843009213693952 string values");
  m = refusal(kv([](auto& h) { h.str("k").u32(7).u8(2); }), "key 'k': bool value 2");
  CHECK(contains(m, "neither 0 nor 1"));
  m = refusal(kv([](auto& h) { h.str("k").u32(9).u32(7).u64(2).u8(1).u8(3); }),
              "key 'k': bool value 3 at offset 50");
  m = refusal(kv([](auto& h) { h.str("k").u32(6).u8(0); }),
              "key 'k': truncated: float32 needs 4 bytes");
  m = refusal(kv([](auto& h) { h.str("kkkkk"); }),
              "key 'kkkkk': truncated: value type needs 4 bytes");
  m = refusal(kv([](auto& h) { h.str("").u32(4).u32(1); }), "metadata key #0: empty key");

  bytes_builder dup;
  dup.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  m = refusal(dup.b, "key 'k': duplicate key");

  // general.alignment: a uint32 power of two.
  m = refusal(kv([](auto& h) { h.str("general.alignment").u32(10).u64(64); }),
              "key 'general.alignment': must be a uint32, is a uint64");
  m = refusal(kv([](auto& h) { h.kv_u32("general.alignment", 48); }),
              "key 'general.alignment': alignment 48 is not a power of two");
  m = refusal(kv([](auto& h) { h.kv_u32("general.alignment", 0); }),
              "alignment 0 is not a power of two");

  // Arrays nest 16 deep, not 17.
  auto nested = [&](int levels) {
    return kv([&](auto& h) {
      h.str("deep").u32(9);
      for (int i = 1; i < levels; ++i) h.u32(9).u64(1);
      h.u32(4).u64(0);
    });
  };
  const auto f = parse(nested(16));
  const gguf_value* v = &f.value("deep");
  int depth = 1;
  while (v->as_arrays() != nullptr) v = &(*v->as_arrays())[0], ++depth;
  CHECK(depth == 16);
  CHECK(v->elem_type() == gguf_type::u32);
  m = refusal(nested(17), "key 'deep': arrays nested deeper than 16 levels");
}

TEST_CASE("gguf: refuses bad tensor infos naming the tensor") {
  CHECK(parse(one_tensor("t", {8}, gt::F32, 0, 32)).at("t").nbytes == 32);

  std::string m = refusal(one_tensor("t", {1, 1, 1, 1, 8}, gt::F32, 0, 32),
                          "tensor 't': 5 dimensions, more than the 4 ggml supports");
  m = refusal(one_tensor("t", {8}, 4, 0, 32), "tensor 't': unknown or removed ggml type 4");
  m = refusal(one_tensor("t", {8}, 99, 0, 32), "tensor 't': unknown or removed ggml type 99");
  m = refusal(one_tensor("t", {33, 2}, gt::Q8_0, 0, 34 * 3),
              "tensor 't': ne[0] = 33 is not a multiple of Q8_0's block of 32 elements");
  m = refusal(one_tensor("t", {255, 1}, gt::Q4_K, 0, 144),
              "ne[0] = 255 is not a multiple of Q4_K's block of 256 elements");
  m = refusal(one_tensor("t", {1ull << 40, 1ull << 40}, gt::F32, 0, 0),
              "tensor 't': element count of dims [1099511627776, 1099511627776] overflows");
  m = refusal(one_tensor("t", {1ull << 63}, gt::I8, 0, 0),
              "tensor 't': dimension 0 = 9223372036854775808 exceeds INT64_MAX");
  m = refusal(one_tensor("t", {1ull << 61}, gt::F64, 0, 0), "tensor 't': byte size of F64");
  m = refusal(one_tensor("t", {8}, gt::F32, 8, 64),
              "tensor 't': data offset 8 is not a multiple of the alignment 32");
  m = refusal(one_tensor("t", {8}, gt::F32, 16, 64, 64),
              "tensor 't': data offset 16 is not a multiple of the alignment 64");
  CHECK(parse(one_tensor("t", {8}, gt::F32, 16, 64, 16)).at("t").offset == 16);
  m = refusal(one_tensor("t", {8}, gt::F32, 0, 31),
              "tensor 't': F32 [8] at data offset 0 (32 bytes) ends past the end of the file");
  CHECK(contains(m, "truncated?"));
  m = refusal(one_tensor("t", {8}, gt::F32, 0xFFFFFFFFFFFFFFE0ull, 32),
              "tensor 't': F32 [8] at data offset 18446744073709551584");
  m = refusal(one_tensor("", {8}, gt::F32, 0, 32), "tensor #0: empty name");
  m = refusal(one_tensor(std::string(65, 'n'), {8}, gt::F32, 0, 32),
              "name of 65 bytes exceeds the 64-byte limit");
  CHECK(parse(one_tensor(std::string(64, 'n'), {8}, gt::F32, 0, 32)).tensors().size() == 1);

  bytes_builder two;
  two.header(2, 0).tensor("a", {16}, gt::F32, 0).tensor("b", {8}, gt::F32, 32).pad(32).fill(64, 0);
  m = refusal(two.b, "tensors 'a' [0, 64) and 'b' [32, 64) overlap in the data section");
  bytes_builder empty_ok;  // empty tensors may share offsets with anything
  empty_ok.header(3, 0)
      .tensor("a", {16}, gt::F32, 0)
      .tensor("z", {0}, gt::F32, 32)
      .tensor("y", {0, 9}, gt::Q8_0, 0)
      .pad(32)
      .fill(64, 0);
  CHECK(parse(empty_ok.b).tensors().size() == 3);
  bytes_builder dup;
  dup.header(2, 0).tensor("t", {8}, gt::F32, 0).tensor("t", {8}, gt::F32, 32).pad(32).fill(64, 0);
  m = refusal(dup.b, "tensor 't': duplicate tensor name");

  bytes_builder cut;
  cut.header(1, 0).str("t").u32(2).u64(8).fill(7, 0).fill(10, 0);
  m = refusal(cut.b, "tensor 't': truncated: data offset needs 8 bytes");
  bytes_builder longname;
  longname.header(1, 0).u64(1ull << 62).fill(20, 0);
  m = refusal(longname.b, "tensor #0: name length 4611686018427387904 at offset 24 runs past");
}

TEST_CASE("gguf: getters and lookups refuse absent keys and other types") {
  temp_dir dir("gguf_get");
  const fs::path p = dir / "get.gguf";
  const std::vector<float> w = {1.f};
  write_gguf(p,
             {{"s", gguf_value::string("x")},
              {"big", gguf_value::u64(1ull << 63)},
              {"bigs", gguf_value::array(std::vector<uint64_t>{1, 1ull << 63})},
              {"names", gguf_value::string_array({"a", "b"})},
              {"f", gguf_value::f32(0.5f)}},
             {{"w", gt::F32, {1}, w.data(), 4}});
  const auto f = gguf_file::open(p);
  const std::string file = fmt::format("gguf file '{}'", p.string());
  std::string m = error_of([&] { (void)f.get_int("s"); });
  CHECK(contains(m, file));
  CHECK(contains(m, "key 's': expected an integer, found a string"));
  m = error_of([&] { (void)f.get_string("nope"); });
  CHECK(contains(m, file));
  CHECK(contains(m, "no metadata key 'nope'"));
  m = error_of([&] { (void)f.get_int("big"); });
  CHECK(contains(m, "key 'big': uint64 9223372036854775808 does not fit in int64"));
  m = error_of([&] { (void)f.get_ints("bigs"); });
  CHECK(contains(m, "key 'bigs': a uint64 element does not fit in int64"));
  m = error_of([&] { (void)f.get_floats("names"); });
  CHECK(contains(m,
                 "key 'names': expected an array of float32 or float64, found an array of 2 "
                 "string"));
  m = error_of([&] { (void)f.get_strings("s"); });
  CHECK(contains(m, "key 's': expected an array of strings, found a string"));
  m = error_of([&] { (void)f.get_bool("f"); });
  CHECK(contains(m, "key 'f': expected a bool, found a float32"));
  m = error_of([&] { (void)f.get_float("s"); });
  CHECK(contains(m, "expected a float32 or float64"));
  CHECK(f.get_float("f") == 0.5);
  m = error_of([&] { (void)f.at("missing"); });
  CHECK(contains(m, file));
  CHECK(contains(m, "no tensor named 'missing' (the file has 1 tensors: w)"));
  CHECK(f.find("missing") == nullptr);

  m = error_of([&] { (void)gguf_file::open(dir / "absent.gguf"); });
  CHECK(contains(m, "absent.gguf"));
  CHECK(contains(m, "cannot open"));
  m = error_of([&] { (void)gguf_file::open(dir.path); });
  CHECK(contains(m, "is a folder"));
  write_raw(dir / "short.gguf", "GGUF\x03");
  m = error_of([&] { (void)gguf_file::open(dir / "short.gguf"); });
  CHECK(contains(m, "short.gguf"));
  CHECK(contains(m, "truncated: 5 bytes"));
}

TEST_CASE("gguf: writer refuses bad input and leaves no file") {
  temp_dir dir("gguf_writer");
  const fs::path p = dir / "bad.gguf";
  const std::vector<uint8_t> b(64, 0);
  const std::string file = fmt::format("gguf file '{}'", p.string());
  auto refused = [&](const std::vector<gguf_kv>& meta, const std::vector<gguf_write>& ts,
                     std::string_view what, uint32_t align = 32) {
    const std::string m = error_of([&] { write_gguf(p, meta, ts, align); });
    CHECK(contains(m, file));
    CHECK(contains(m, what));
    CHECK_FALSE(fs::exists(p));
    CHECK_FALSE(fs::exists(dir / "bad.gguf.tmp"));
  };
  refused({}, {{"w", gt::F32, {3}, b.data(), 8}}, "tensor 'w': F32 [3] needs 12 bytes, got 8");
  refused({}, {{"w", gt::Q8_0, {32, 2}, b.data(), 34}},
          "tensor 'w': Q8_0 [32, 2] needs 68 bytes, got 34");
  refused({}, {{"w", 5, {2}, b.data(), 8}}, "tensor 'w': unknown or removed ggml type 5");
  refused({}, {{"w", gt::Q4_0, {16}, b.data(), 9}},
          "tensor 'w': ne[0] = 16 is not a multiple of Q4_0's block of 32 elements");
  refused({}, {{"w", gt::F32, {1, 1, 1, 1, 1}, b.data(), 4}}, "tensor 'w': 5 dimensions");
  refused({}, {{"w", gt::F32, {1}, b.data(), 4}, {"w", gt::F32, {1}, b.data(), 4}},
          "tensor 'w' given twice");
  refused({}, {{"", gt::F32, {1}, b.data(), 4}}, "empty name");
  refused({}, {{std::string(64, 'x'), gt::F32, {1}, b.data(), 4}},
          "name of 64 bytes, over ggml's limit of 63");
  refused({}, {{"w", gt::F32, {2}, nullptr, 8}}, "tensor 'w': null data");
  refused({}, {}, "alignment 48 is not a power of two", 48);
  refused({}, {}, "alignment 0 is not a power of two", 0);
  refused({{"k", gguf_value::u8(1)}, {"k", gguf_value::u8(2)}}, {}, "key 'k' given twice");
  refused({{"", gguf_value::u8(1)}}, {}, "empty metadata key");
  refused({{std::string(65536, 'k'), gguf_value::u8(1)}}, {}, "65536 bytes, over the 65535");
  refused({{"general.alignment", gguf_value::u32(64)}}, {},
          "key 'general.alignment': must be the uint32 32");
  refused({{"general.alignment", gguf_value::u64(64)}}, {}, "must be the uint32 64", 64);
  refused({{"k", gguf_value::array_of_arrays({gguf_value::u8(1)})}}, {},
          "key 'k': an array of arrays holds a value that is not an array");
  gguf_value deep = gguf_value::array(std::vector<int32_t>{1});
  for (int i = 1; i < 16; ++i) deep = gguf_value::array_of_arrays({deep});
  write_gguf(p, {{"deep", deep}}, {});  // 16 levels: fine
  CHECK(gguf_file::open(p).value("deep") == deep);
  fs::remove(p);
  refused({{"deep", gguf_value::array_of_arrays({deep})}}, {},
          "key 'deep': arrays nested deeper than 16 levels");

  const std::string m = error_of([&] { write_gguf(dir / "no_such_dir" / "x.gguf", {}, {}); });
  CHECK(contains(m, "cannot create"));

  // A refused write leaves an existing file as it was.
  const std::vector<float> w = {4.f};
  write_gguf(p, {}, {{"w", gt::F32, {1}, w.data(), 4}});
  const std::string before = read_file(p);
  (void)error_of([&] { write_gguf(p, {}, {{"w", gt::F32, {2}, w.data(), 4}}); });
  CHECK(read_file(p) == before);
}

TEST_CASE("gguf: a file cut at any byte is refused with zf::error, never a crash") {
  temp_dir dir("gguf_cut");
  const fs::path p = dir / "full.gguf";
  const tensor_set s = make_tensors();
  write_gguf(p, every_type(), s.tensors, 64);
  const std::string full = read_file(p);
  const auto f = gguf_file::open(p);
  uint64_t data_end = 0;
  for (const auto& t : f.tensors())
    data_end = std::max<uint64_t>(data_end, f.data_offset() + t.offset + t.nbytes);
  REQUIRE(data_end > f.data_offset());
  REQUIRE(full.size() >= data_end);

  int refused = 0, other = 0;
  for (std::size_t cut = 0; cut < full.size(); ++cut) {
    const std::string part = full.substr(0, cut);
    try {
      const auto g = gguf_file::from_bytes(std::string_view(part), "cut.gguf");
      // Only the zero padding after the last tensor may go.
      CHECK_MESSAGE(cut >= data_end, "a file cut at byte " << cut << " was accepted");
      CHECK(g.tensors().size() == s.tensors.size());
    } catch (const zf::error& e) {
      CHECK_MESSAGE(cut < data_end, "cut at " << cut << ": " << e.what());
      CHECK(contains(e.what(), "gguf file 'cut.gguf'"));
      ++refused;
    } catch (...) {
      ++other;
    }
  }
  CHECK(refused == static_cast<int>(data_end));
  CHECK(other == 0);

  // The same through open() at a few cuts, and a message that says truncated.
  for (std::size_t cut :
       {std::size_t{0}, std::size_t{23}, std::size_t{24}, std::size_t{100},
        static_cast<std::size_t>(f.data_offset()), static_cast<std::size_t>(data_end - 1)}) {
    CAPTURE(cut);
    write_raw(dir / "cut.gguf", full.substr(0, cut));
    const std::string m = error_of([&] { (void)gguf_file::open(dir / "cut.gguf"); });
    CHECK(contains(m, (dir / "cut.gguf").string()));
    CHECK((contains(m, "truncated") || contains(m, "past the end") || contains(m, "cannot fit")));
  }
}

TEST_CASE("gguf: header bytes overwritten one at a time are read or refused, never a crash") {
  temp_dir dir("gguf_flip");
  const fs::path p = dir / "flip.gguf";
  const tensor_set s = make_tensors();
  write_gguf(p, every_type(), s.tensors, 32);
  const std::string full = read_file(p);
  const auto header = static_cast<std::size_t>(gguf_file::open(p).data_offset());
  int accepted = 0, refused = 0, other = 0;
  for (std::size_t i = 0; i < header; ++i) {
    for (uint8_t x : {uint8_t{0x00}, uint8_t{0xFF}, uint8_t{0x80}, uint8_t{0x41}}) {
      std::string b = full;
      if (static_cast<uint8_t>(b[i]) == x) continue;
      b[i] = static_cast<char>(x);
      try {
        const auto g = gguf_file::from_bytes(std::string_view(b), "flip.gguf");
        for (const auto& t : g.tensors())  // whatever was accepted lies inside the file
          CHECK(t.offset + t.nbytes + g.data_offset() <= b.size());
        ++accepted;
      } catch (const zf::error& e) {
        CHECK(contains(e.what(), "gguf file 'flip.gguf'"));
        ++refused;
      } catch (...) {
        ++other;
      }
    }
  }
  CHECK(other == 0);
  CHECK(refused > 100);
  CHECK(accepted > 100);  // string bytes, values and padding may change freely
}
