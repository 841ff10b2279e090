// GGUF reader/writer (storage/gguf): the ggml type table, round trips of every metadata type
// and of F32/F16/Q8_0/Q4_0 tensors at several alignments, headers built byte by byte here and
// read field by field, and the writer's exact bytes. Refusals, truncated and corrupted files are
// test_gguf_refusals.cpp's; the helpers both use are in gguf_fixtures.hpp.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "gguf_fixtures.hpp"
#include "storage/gguf.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::gguf_file;
using zf::storage::gguf_type;
using zf::storage::gguf_value;
using zf::storage::gguf_write;
using zf::storage::write_gguf;
namespace gt = zf::storage::ggml_types;

namespace {

using namespace zf::testing::gguf_fixtures;
using zf::testing::temp_dir;

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
