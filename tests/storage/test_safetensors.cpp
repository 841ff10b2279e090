// safetensors reader/writer: round trip, validation errors, dtype conversion, and files written by
// Python (tests/golden/st_python_fixture.safetensors from gen_st_fixture.py, and the GPT golden
// file from gen_golden.py).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/safetensors.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::storage::safetensors_file;
using zf::storage::st_write;
using zf::storage::write_safetensors;

namespace {

using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

// A raw file: 8-byte length (hlen, or the header size if hlen < 0), header text, data bytes.
void write_raw(const fs::path& p, const std::string& header, const std::string& data,
               int64_t hlen = -1) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  const uint64_t n = hlen < 0 ? header.size() : static_cast<uint64_t>(hlen);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string bytes_of(const void* p, std::size_t n) {
  return std::string(static_cast<const char*>(p), n);
}

uint64_t header_len(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  return n;
}

// Open p and return the error message.
std::string open_error(const fs::path& p) {
  return error_of([&] { (void)safetensors_file::open(p); });
}

}  // namespace

TEST_CASE("safetensors: round trip") {
  temp_dir dir("roundtrip");
  const fs::path p = dir / "rt.safetensors";

  const std::vector<float> f32 = {1.f, -2.5f, 3.25f, 0.f, 1e-7f, -1e30f};
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF};  // 1, -2, 65504
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC040};         // 1, -3
  const std::vector<int32_t> i32 = {0, -1, 2147483647, -2147483647 - 1};
  const std::vector<int64_t> i64 = {5, -6};
  const std::vector<uint8_t> u8 = {0, 200, 255};
  const std::vector<double> f64 = {0.5, -0.25};
  const float scalar = 7.5f;
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"n_layer", "2"}};

  // Small-element tensors first: the writer must still align every tensor.
  const std::vector<st_write> in = {
      {"bytes", "U8", {3}, u8.data(), u8.size()},
      {"half", "F16", {3}, f16.data(), f16.size() * 2},
      {"weight", "F32", {2, 3}, f32.data(), f32.size() * 4},
      {"brain", "BF16", {2}, bf16.data(), bf16.size() * 2},
      {"ids", "I32", {4}, i32.data(), i32.size() * 4},
      {"ids64", "I64", {2, 1}, i64.data(), i64.size() * 8},
      {"dbl", "F64", {2}, f64.data(), f64.size() * 8},
      {"empty", "F32", {0, 5}, nullptr, 0},
      {"scalar", "F32", {}, &scalar, 4},
  };
  write_safetensors(p, in, meta);
  CHECK(fs::exists(p));
  CHECK_FALSE(fs::exists(dir / "rt.safetensors.tmp"));
  CHECK(header_len(p) % 8 == 0);

  auto f = safetensors_file::open(p);
  REQUIRE(f.tensors().size() == in.size());
  CHECK(f.metadata() == meta);
  for (const auto& w : in) {
    CAPTURE(w.name);
    const auto* t = f.find(w.name);
    REQUIRE(t != nullptr);
    CHECK(t->name == w.name);
    CHECK(t->dtype == w.dtype);
    CHECK(t->shape == w.shape);
    REQUIRE(t->nbytes == w.nbytes);
    if (w.nbytes) CHECK(std::memcmp(t->data, w.data, w.nbytes) == 0);
    // Aligned to the element size.
    CHECK(reinterpret_cast<std::uintptr_t>(t->data) % zf::storage::dtype_size(w.dtype) == 0);
  }
  // tensors() is in file order; the 8-byte ones come first.
  for (std::size_t i = 1; i < f.tensors().size(); ++i)
    CHECK(f.tensors()[i - 1].data <= f.tensors()[i].data);
  CHECK(f.tensors()[0].dtype.size() == 3);
  CHECK((f.tensors()[0].dtype == "F64" || f.tensors()[0].dtype == "I64"));

  CHECK(f.to_f32("weight") == f32);
  CHECK(f.to_f32("dbl") == std::vector<float>{0.5f, -0.25f});
  CHECK(f.to_f32("scalar") == std::vector<float>{7.5f});
  CHECK(f.to_f32("empty").empty());
  CHECK(f.to_f32("half") == std::vector<float>{1.f, -2.f, 65504.f});
  CHECK(f.to_f32("brain") == std::vector<float>{1.f, -3.f});
  CHECK(f.to_i32("ids") == i32);
  CHECK(f.to_i32("ids64") == std::vector<int32_t>{5, -6});
  CHECK(f.to_i32("bytes") == std::vector<int32_t>{0, 200, 255});

  // Moving keeps the mapping (and the data pointers) alive.
  const std::byte* before = f.at("weight").data;
  safetensors_file g = std::move(f);
  CHECK(g.at("weight").data == before);
  CHECK(g.to_f32("weight") == f32);

  // Overwriting an existing file replaces it; the open mapping of the old one stays valid.
  const std::vector<float> other = {9.f};
  write_safetensors(p, {{"weight", "F32", {1}, other.data(), 4}});
  CHECK(g.to_f32("weight") == f32);
  auto h = safetensors_file::open(p);
  CHECK(h.tensors().size() == 1);
  CHECK(h.metadata().empty());
  CHECK(h.to_f32("weight") == other);

  // No tensors at all is a valid file.
  write_safetensors(p, {}, {{"k", "v"}});
  auto e = safetensors_file::open(p);
  CHECK(e.tensors().empty());
  CHECK(e.metadata().at("k") == "v");
}

TEST_CASE("safetensors: writer rejects bad input and leaves no file") {
  temp_dir dir("writer");
  const fs::path p = dir / "bad.safetensors";
  const std::vector<float> v = {1.f, 2.f};
  std::string m = error_of([&] { write_safetensors(p, {{"w", "F32", {3}, v.data(), 8}}); });
  CHECK(contains(m, "bad.safetensors"));
  CHECK(contains(m, "'w'"));
  m = error_of([&] { write_safetensors(p, {{"w", "F33", {2}, v.data(), 8}}); });
  CHECK(contains(m, "unknown dtype"));
  m = error_of([&] {
    write_safetensors(p, {{"w", "F32", {2}, v.data(), 8}, {"w", "F32", {2}, v.data(), 8}});
  });
  CHECK(contains(m, "'w' given twice"));
  m = error_of([&] { write_safetensors(p, {{"__metadata__", "F32", {2}, v.data(), 8}}); });
  CHECK(contains(m, "reserved"));
  m = error_of([&] { write_safetensors(p, {{"w", "F32", {-2}, v.data(), 8}}); });
  CHECK(contains(m, "negative"));
  m = error_of([&] { write_safetensors(p, {{"w", "F32", {2}, nullptr, 8}}); });
  CHECK(contains(m, "null data"));
  m = error_of([&] { write_safetensors(dir / "no_such_dir" / "x.safetensors", {}); });
  CHECK(contains(m, "cannot create"));
  CHECK_FALSE(fs::exists(p));
  CHECK_FALSE(fs::exists(dir / "bad.safetensors.tmp"));
}

TEST_CASE("safetensors: truncated file") {
  temp_dir dir("trunc");
  const fs::path p = dir / "t.safetensors";
  const std::vector<float> a = {1.f, 2.f, 3.f, 4.f};
  const std::vector<float> b = {5.f, 6.f};
  write_safetensors(p, {{"first", "F32", {4}, a.data(), 16}, {"last", "F32", {2}, b.data(), 8}});
  const auto full = fs::file_size(p);
  const auto hlen = header_len(p);

  fs::resize_file(p, full - 3);  // cuts into the last tensor
  std::string m = open_error(p);
  CHECK(contains(m, p.string()));
  CHECK(contains(m, "'last'"));
  CHECK(contains(m, "out of range"));

  fs::resize_file(p, 8 + hlen - 5);  // cuts into the header
  m = open_error(p);
  CHECK(contains(m, p.string()));
  CHECK(contains(m, "header length"));

  fs::resize_file(p, 5);  // cuts into the length field
  m = open_error(p);
  CHECK(contains(m, "truncated"));

  fs::resize_file(p, 0);
  m = open_error(p);
  CHECK(contains(m, "truncated"));

  m = open_error(dir / "missing.safetensors");
  CHECK(contains(m, "missing.safetensors"));
  CHECK(contains(m, "cannot open"));
}

TEST_CASE("safetensors: bad header length and bad header") {
  temp_dir dir("header");
  const fs::path p = dir / "h.safetensors";
  const std::string ok = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const std::string data(4, '\0');

  write_raw(p, ok, data);
  CHECK_NOTHROW((void)safetensors_file::open(p));

  write_raw(p, ok, data, 0);
  CHECK(contains(open_error(p), "header length is 0"));
  write_raw(p, ok, data, int64_t{1} << 40);
  std::string m = open_error(p);
  CHECK(contains(m, "header length 1099511627776 exceeds"));
  CHECK(contains(m, "h.safetensors"));
  write_raw(p, ok, data, static_cast<int64_t>(ok.size() + data.size() + 1));
  CHECK(contains(open_error(p), "exceeds"));
  write_raw(p, ok, data, static_cast<int64_t>(ok.size() - 1));  // cuts the closing brace
  CHECK(contains(open_error(p), "not valid JSON"));

  write_raw(p, "[1, 2]  ", "");
  CHECK(contains(open_error(p), "does not start with '{'"));
  write_raw(p, "{nope}  ", "");
  CHECK(contains(open_error(p), "not valid JSON"));
  write_raw(p, R"({"w": 3})", "");
  m = open_error(p);
  CHECK(contains(m, "'w'"));
  CHECK(contains(m, "not an object"));
  write_raw(p, R"({"__metadata__": {"a": 1}})", "");
  CHECK(contains(open_error(p), "__metadata__ value for 'a' is not a string"));
  write_raw(p, R"({"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", data);
  CHECK(contains(open_error(p), "tensor 'w': unknown dtype 'F31'"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", data);
  CHECK(contains(open_error(p), "non-negative"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", data);
  CHECK(contains(open_error(p), "non-negative"));
  write_raw(p, R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", data);
  CHECK(contains(open_error(p), "\"shape\""));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", data);
  CHECK(contains(open_error(p), "data_offsets"));
  write_raw(p,
            R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
            data);
  CHECK(contains(open_error(p), "duplicate key 'w'"));
  // Spaces after the JSON (the padding the spec allows) are fine; a nested duplicate is not ours
  // to police.
  write_raw(p, ok + "   ", data);
  CHECK_NOTHROW((void)safetensors_file::open(p));
}

TEST_CASE("safetensors: offsets out of range, wrong span, overlap") {
  temp_dir dir("offsets");
  const fs::path p = dir / "o.safetensors";
  const std::string data(12, '\0');

  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data);
  std::string m = open_error(p);
  CHECK(contains(m, "o.safetensors"));
  CHECK(contains(m, "tensor 'w'"));
  CHECK(contains(m, "out of range"));

  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data);
  CHECK(contains(open_error(p), "begin > end"));

  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", data);
  m = open_error(p);
  CHECK(contains(m, "tensor 'w'"));
  CHECK(contains(m, "needs 8 bytes"));

  write_raw(p, R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", data);
  CHECK(contains(open_error(p), "overflows"));

  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            data);
  m = open_error(p);
  CHECK(contains(m, "overlap"));
  CHECK(contains(m, "'a'"));
  CHECK(contains(m, "'b'"));

  // A tensor nested inside a longer one overlaps too.
  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            data);
  CHECK(contains(open_error(p), "overlap"));

  // Zero-size tensors may sit anywhere, including at the end; adjacent spans are fine.
  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
            R"("e":{"dtype":"F32","shape":[0,7],"data_offsets":[12,12]}})",
            data);
  auto f = safetensors_file::open(p);
  CHECK(f.tensors().size() == 4);
  CHECK(f.tensors()[0].name == "a");
  CHECK(f.tensors()[3].name == "e");
}

TEST_CASE("safetensors: missing tensor names file and tensor") {
  temp_dir dir("missing");
  const fs::path p = dir / "m.safetensors";
  const std::vector<float> v = {1.f};
  write_safetensors(p, {{"wte.weight", "F32", {1}, v.data(), 4}});
  auto f = safetensors_file::open(p);
  CHECK(f.find("h.0.ln_1.weight") == nullptr);
  CHECK(f.find("wte.weight") != nullptr);
  std::string m = error_of([&] { (void)f.at("h.0.ln_1.weight"); });
  CHECK(contains(m, p.string()));
  CHECK(contains(m, "'h.0.ln_1.weight'"));
  CHECK(contains(m, "wte.weight"));  // lists what is there
  m = error_of([&] { (void)f.to_f32("nope"); });
  CHECK(contains(m, "'nope'"));
  m = error_of([&] { (void)f.to_i32("wte.weight"); });
  CHECK(contains(m, "'wte.weight'"));
  CHECK(contains(m, "F32"));
}

TEST_CASE("safetensors: f16 and bf16 conversion") {
  temp_dir dir("conv");
  const fs::path p = dir / "c.safetensors";

  // Every binary16 bit pattern against an independent ldexp formula.
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<uint16_t> bf = {0x3F80, 0xC040, 0x4049, 0x7F80, 0xFF80,
                                    0x7FC0, 0x0001, 0x8000, 0x3E80, 0x477F};
  write_safetensors(p, {{"h", "F16", {256, 256}, all.data(), all.size() * 2},
                        {"b", "BF16", {10}, bf.data(), bf.size() * 2}});
  auto f = safetensors_file::open(p);
  const auto h = f.to_f32("h");
  REQUIRE(h.size() == 65536);
  int bad = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const int sign = (i >> 15) ? -1 : 1;
    const int exp = static_cast<int>((i >> 10) & 0x1f);
    const int mant = static_cast<int>(i & 0x3ff);
    if (exp == 31) {
      if (mant == 0 ? !(std::isinf(h[i]) && std::signbit(h[i]) == (sign < 0)) : !std::isnan(h[i]))
        ++bad;
      continue;
    }
    const double ref =
        exp == 0 ? sign * std::ldexp(mant, -24) : sign * std::ldexp(1024 + mant, exp - 25);
    if (static_cast<double>(h[i]) != ref || std::signbit(h[i]) != (sign < 0)) ++bad;
  }
  CHECK(bad == 0);
  CHECK(h[0x3C00] == 1.f);
  CHECK(h[0x7BFF] == 65504.f);
  CHECK(h[0x0001] == std::ldexp(1.f, -24));
  CHECK(h[0x0400] == std::ldexp(1.f, -14));
  CHECK(h[0x3555] == 0.333251953125f);

  const auto b = f.to_f32("b");
  CHECK(b[0] == 1.f);
  CHECK(b[1] == -3.f);
  CHECK(b[2] == 3.140625f);
  CHECK(std::isinf(b[3]));
  CHECK(b[3] > 0);
  CHECK(std::isinf(b[4]));
  CHECK(b[4] < 0);
  CHECK(std::isnan(b[5]));
  CHECK(b[6] == std::ldexp(1.f, -133));  // bf16 subnormal
  CHECK(b[7] == 0.f);
  CHECK(std::signbit(b[7]));
  CHECK(b[8] == 0.25f);
  CHECK(b[9] == 65280.f);

  // Unaligned data (an unpadded header, as older writers produced) reads correctly.
  const fs::path u = dir / "u.safetensors";
  const float fv[2] = {1.5f, -2.75f};
  const uint16_t hv[1] = {0xC000};
  const int64_t iv[1] = {-123456789012LL};
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("y":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},)"
                       R"("z":{"dtype":"I64","shape":[1],"data_offsets":[10,18]}})";
  if (header.size() % 2 == 0) header += ' ';  // odd: data starts at an odd address
  write_raw(u, header, bytes_of(fv, 8) + bytes_of(hv, 2) + bytes_of(iv, 8));
  auto g = safetensors_file::open(u);
  CHECK(reinterpret_cast<std::uintptr_t>(g.at("x").data) % 2 == 1);
  CHECK(g.to_f32("x") == std::vector<float>{1.5f, -2.75f});
  CHECK(g.to_f32("y") == std::vector<float>{-2.f});
  // to_i32 range check names the tensor and element.
  std::string m = error_of([&] { (void)g.to_i32("z"); });
  CHECK(contains(m, "'z'"));
  CHECK(contains(m, "element 0 = -123456789012"));
  CHECK(contains(m, "int32"));
  m = error_of([&] { (void)g.to_f32("z"); });
  CHECK(contains(m, "I64"));
}

TEST_CASE("safetensors: reads a file written by Python") {
  const fs::path p = fs::path(ZF_SOURCE_DIR) / "tests/golden/st_python_fixture.safetensors";
  auto f = safetensors_file::open(p);
  CHECK(f.metadata() ==
        std::map<std::string, std::string>{{"format", "pt"}, {"producer", "python struct+json"}});
  REQUIRE(f.tensors().size() == 8);
  // File order as Python wrote it.
  const std::vector<std::string> order = {"ids64", "weight", "ids32", "scalar",
                                          "empty", "half",   "bf",    "bytes"};
  for (std::size_t i = 0; i < order.size(); ++i) CHECK(f.tensors()[i].name == order[i]);

  CHECK(f.at("ids64").dtype == "I64");
  CHECK(f.at("ids64").shape == std::vector<int64_t>{2, 3});
  CHECK(f.to_i32("ids64") == std::vector<int32_t>{0, 1, -1, 2147483647, -2147483647 - 1, 50256});
  CHECK(f.at("weight").shape == std::vector<int64_t>{2, 3});
  CHECK(f.to_f32("weight") == std::vector<float>{0.5f, -1.25f, 3.f, 1024.f, -0.0078125f, 6.5f});
  CHECK(f.to_i32("ids32") == std::vector<int32_t>{7, -8, 50256});
  CHECK(f.at("scalar").shape.empty());
  CHECK(f.to_f32("scalar") == std::vector<float>{42.f});
  CHECK(f.at("empty").shape == std::vector<int64_t>{0, 4});
  CHECK(f.at("empty").nbytes == 0);
  CHECK(f.to_f32("half") ==
        std::vector<float>{1.f, -2.f, 65504.f, std::ldexp(1.f, -24), 0.333251953125f});
  CHECK(f.at("bf").dtype == "BF16");
  CHECK(f.to_f32("bf") == std::vector<float>{1.f, -3.f, 3.140625f, std::ldexp(1.f, -130)});
  CHECK(f.at("bytes").dtype == "U8");
  CHECK(f.to_i32("bytes") == std::vector<int32_t>{0, 1, 127, 255});
}

TEST_CASE("safetensors: GPT golden file from gen_golden.py has the documented layout") {
  const fs::path p = fs::path(ZF_SOURCE_DIR) / "tests/golden/gpt_small.safetensors";
  auto f = safetensors_file::open(p);
  const auto& md = f.metadata();
  for (const char* k :
       {"n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "B", "T", "steps", "lr",
        "warmup", "min_lr_ratio", "beta1", "beta2", "eps", "weight_decay", "grad_clip", "seed"}) {
    CAPTURE(k);
    CHECK(md.count(k) == 1);
  }
  const int L = std::stoi(md.at("n_layer")), C = std::stoi(md.at("n_embd"));
  const int V = std::stoi(md.at("vocab_size")), P = std::stoi(md.at("n_positions"));
  const int B = std::stoi(md.at("B")), T = std::stoi(md.at("T")), S = std::stoi(md.at("steps"));
  using shp = std::vector<int64_t>;
  std::vector<std::pair<std::string, shp>> params = {{"wte.weight", {V, C}},
                                                     {"wpe.weight", {P, C}}};
  for (int i = 0; i < L; ++i) {
    const std::string h = fmt::format("h.{}.", i);
    params.push_back({h + "ln_1.weight", {C}});
    params.push_back({h + "ln_1.bias", {C}});
    params.push_back({h + "attn.c_attn.weight", {C, 3 * C}});
    params.push_back({h + "attn.c_attn.bias", {3 * C}});
    params.push_back({h + "attn.c_proj.weight", {C, C}});
    params.push_back({h + "attn.c_proj.bias", {C}});
    params.push_back({h + "ln_2.weight", {C}});
    params.push_back({h + "ln_2.bias", {C}});
    params.push_back({h + "mlp.c_fc.weight", {C, 4 * C}});
    params.push_back({h + "mlp.c_fc.bias", {4 * C}});
    params.push_back({h + "mlp.c_proj.weight", {4 * C, C}});
    params.push_back({h + "mlp.c_proj.bias", {C}});
  }
  params.push_back({"ln_f.weight", {C}});
  params.push_back({"ln_f.bias", {C}});
  for (const auto& param : params) {
    for (const char* prefix : {"", "grad.", "final."}) {
      const std::string name = prefix + param.first;
      CAPTURE(name);
      const auto& t = f.at(name);
      CHECK(t.dtype == "F32");
      CHECK(t.shape == param.second);
    }
  }
  CHECK(f.at("input_ids").dtype == "I32");
  CHECK(f.at("input_ids").shape == shp{S, B, T + 1});
  const auto ids = f.to_i32("input_ids");
  CHECK(std::all_of(ids.begin(), ids.end(), [&](int32_t v) { return v >= 0 && v < V; }));
  CHECK(f.at("logits").shape == shp{B, T, V});
  CHECK(f.at("loss").shape == shp{1});
  CHECK(f.at("train_losses").shape == shp{S});
  // Step 0 of training runs on batch 0 at the initial weights: the same loss.
  const float loss = f.to_f32("loss")[0];
  const auto losses = f.to_f32("train_losses");
  CHECK(losses[0] == doctest::Approx(loss).epsilon(1e-6));
  CHECK(std::isfinite(loss));
  CHECK(loss > 0.f);
}
