// GGUF reader/writer (storage/gguf) refusals: every bad header, metadata, tensor info, getter
// and writer input refused with a message naming the file (and key or tensor), and files cut at
// any byte or with header bytes overwritten (never a crash, always zf::error). Helpers shared with
// test_gguf.cpp are in gguf_fixtures.hpp.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>
#include <vector>

#include "gguf_fixtures.hpp"
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

using namespace zf::testing::gguf_fixtures;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

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
