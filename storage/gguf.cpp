// The GGUF reader (gguf_file, storage/gguf.hpp) and ggml's type table (ggml_type_info,
// ggml_nbytes, the tensor size check), with gguf_type_name and gguf_tensor::n_elements. Values
// are decoded by gguf_codec (gguf_value.cpp); write_gguf is in gguf_write.cpp.
#include "storage/gguf.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>

#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"
#include "storage/gguf_detail.hpp"

namespace zf::storage {

namespace fs = std::filesystem;
using namespace gguf_detail;

namespace {

constexpr std::size_t kHeaderBytes = 24;        // magic, version, tensor_count, metadata_kv_count
constexpr std::size_t kMinKvBytes = 8 + 4 + 1;  // empty key length, value type, a uint8
constexpr std::size_t kMinTensorBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset
constexpr std::size_t kMaxNameRead = 64;                // the spec's limit on a tensor name

// ggml's type table (ggml.h enum ggml_type, block sizes from ggml-common.h's block_* structs).
// Ids 4, 5 (Q4_2, Q4_3), 31-33 (Q4_0_4_4 ...) and 36-38 (IQ4_NL_4_4 ...) were removed.
constexpr std::array<ggml_type_desc, 43> kTypes = {{
    {"F32", 1, 4},         // 0
    {"F16", 1, 2},         // 1
    {"Q4_0", 32, 18},      // 2: f16 d + 16 nibble bytes
    {"Q4_1", 32, 20},      // 3: f16 d, m + 16
    {nullptr, 0, 0},       // 4 removed
    {nullptr, 0, 0},       // 5 removed
    {"Q5_0", 32, 22},      // 6: f16 d + u32 high bits + 16
    {"Q5_1", 32, 24},      // 7
    {"Q8_0", 32, 34},      // 8: f16 d + 32 int8
    {"Q8_1", 32, 36},      // 9: f16 d, s + 32
    {"Q2_K", 256, 84},     // 10
    {"Q3_K", 256, 110},    // 11
    {"Q4_K", 256, 144},    // 12
    {"Q5_K", 256, 176},    // 13
    {"Q6_K", 256, 210},    // 14
    {"Q8_K", 256, 292},    // 15: f32 d + 256 int8 + 16 int16 sums
    {"IQ2_XXS", 256, 66},  // 16
    {"IQ2_XS", 256, 74},   // 17
    {"IQ3_XXS", 256, 98},  // 18
    {"IQ1_S", 256, 50},    // 19
    {"IQ4_NL", 32, 18},    // 20
    {"IQ3_S", 256, 110},   // 21
    {"IQ2_S", 256, 82},    // 22
    {"IQ4_XS", 256, 136},  // 23
    {"I8", 1, 1},          // 24
    {"I16", 1, 2},         // 25
    {"I32", 1, 4},         // 26
    {"I64", 1, 8},         // 27
    {"F64", 1, 8},         // 28
    {"IQ1_M", 256, 56},    // 29
    {"BF16", 1, 2},        // 30
    {nullptr, 0, 0},       // 31 removed
    {nullptr, 0, 0},       // 32 removed
    {nullptr, 0, 0},       // 33 removed
    {"TQ1_0", 256, 54},    // 34
    {"TQ2_0", 256, 66},    // 35
    {nullptr, 0, 0},       // 36 removed
    {nullptr, 0, 0},       // 37 removed
    {nullptr, 0, 0},       // 38 removed
    {"MXFP4", 32, 17},     // 39: e8m0 scale + 16
    {"NVFP4", 64, 36},     // 40: 4 e4m3 scales + 32
    {"Q1_0", 128, 18},     // 41
    {"Q2_0", 64, 18},      // 42
}};

}  // namespace

namespace gguf_detail {

std::string dims_text(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

size_check tensor_size(uint32_t type, std::span<const uint64_t> dims) {
  const ggml_type_desc* t = ggml_type_info(type);
  if (t == nullptr) return {0, fmt::format("unknown or removed ggml type {}", type)};
  uint64_t n = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return {0, fmt::format("dimension {} = {} exceeds INT64_MAX", i, dims[i])};
    if (__builtin_mul_overflow(n, dims[i], &n) ||
        n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return {0, fmt::format("element count of dims {} overflows",
                             dims_text(std::vector<uint64_t>(dims.begin(), dims.end())))};
  }
  const uint64_t ne0 = dims.empty() ? 1 : dims[0];
  if (ne0 % t->block != 0)
    return {0, fmt::format("ne[0] = {} is not a multiple of {}'s block of {} elements", ne0,
                           t->name, t->block)};
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(n / t->block, uint64_t{t->bytes}, &bytes) ||
      bytes > std::numeric_limits<std::size_t>::max())
    return {0, fmt::format("byte size of {} x {} overflows", t->name,
                           dims_text(std::vector<uint64_t>(dims.begin(), dims.end())))};
  return {bytes, {}};
}

}  // namespace gguf_detail

const ggml_type_desc* ggml_type_info(uint32_t type) {
  if (type >= kTypes.size() || kTypes[type].name == nullptr) return nullptr;
  return &kTypes[type];
}

std::optional<uint64_t> ggml_nbytes(uint32_t type, std::span<const uint64_t> dims) {
  const size_check s = tensor_size(type, dims);
  if (!s.problem.empty()) return std::nullopt;
  return s.bytes;
}

std::string_view gguf_type_name(gguf_type t) {
  switch (t) {
    case gguf_type::u8:
      return "uint8";
    case gguf_type::i8:
      return "int8";
    case gguf_type::u16:
      return "uint16";
    case gguf_type::i16:
      return "int16";
    case gguf_type::u32:
      return "uint32";
    case gguf_type::i32:
      return "int32";
    case gguf_type::f32:
      return "float32";
    case gguf_type::boolean:
      return "bool";
    case gguf_type::string:
      return "string";
    case gguf_type::array:
      return "array";
    case gguf_type::u64:
      return "uint64";
    case gguf_type::i64:
      return "int64";
    case gguf_type::f64:
      return "float64";
  }
  return "unknown";
}

uint64_t gguf_tensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;  // validated at open: cannot overflow
  return n;
}

// ---- reader --------------------------------------------------------------------------------

gguf_file gguf_file::open(const fs::path& p) {
  gguf_file f;
  f.path_ = p;
  f.map_ = mapped_file::open(p, "gguf file", kHeaderBytes);  // a FIFO or folder refused by name
  parse(f, p.string(), reinterpret_cast<const std::byte*>(f.map_.data()), f.map_.size());
  return f;
}

gguf_file gguf_file::from_bytes(std::vector<std::byte> bytes, const std::string& name) {
  gguf_file f;
  f.path_ = name;
  f.owned_ = std::move(bytes);
  if (f.owned_.size() < kHeaderBytes)
    fail("gguf file '{}': truncated: {} bytes, shorter than the {}-byte header", name,
         f.owned_.size(), kHeaderBytes);
  parse(f, name, f.owned_.data(), f.owned_.size());
  return f;
}

gguf_file gguf_file::from_bytes(std::string_view bytes, const std::string& name) {
  const auto* b = reinterpret_cast<const std::byte*>(bytes.data());
  return from_bytes(std::vector<std::byte>(b, b + bytes.size()), name);
}

void gguf_file::parse(gguf_file& f, const std::string& file, const std::byte* base,
                      std::size_t size) {
  gguf_codec::cursor c{base, size, 0, file};
  if (std::memcmp(base, "GGUF", 4) != 0) {
    std::string shown;
    for (int i = 0; i < 4; ++i) {
      const auto ch = static_cast<unsigned char>(base[i]);
      shown += ch >= 0x20 && ch < 0x7f ? std::string(1, static_cast<char>(ch))
                                       : fmt::format("\\x{:02x}", ch);
    }
    fail("gguf file '{}': bad magic '{}', expected 'GGUF' (not a GGUF file)", file, shown);
  }
  c.pos = 4;
  f.version_ = c.get<uint32_t>("header", "version");
  if (f.version_ != 0 && (f.version_ & 0xFFFF) == 0)
    fail(
        "gguf file '{}': version field reads {:#010x}: a big-endian GGUF file (byte-swapped "
        "version {}); only little-endian files are supported",
        file, f.version_, __builtin_bswap32(f.version_));
  if (f.version_ == 1)
    fail("gguf file '{}': GGUF version 1 (32-bit counts) is not supported; convert it to v3", file);
  if (f.version_ != 2 && f.version_ != 3)
    fail("gguf file '{}': unsupported GGUF version {} (this reader reads 2 and 3)", file,
         f.version_);
  const auto n_tensors = c.get<uint64_t>("header", "tensor count");
  const auto n_kv = c.get<uint64_t>("header", "metadata key/value count");
  if (n_kv > c.left() / kMinKvBytes)
    fail(
        "gguf file '{}': metadata key/value count {} cannot fit in the {} bytes after the header "
        "(each takes at least {})",
        file, n_kv, c.left(), kMinKvBytes);
  if (n_tensors > c.left() / kMinTensorBytes)
    fail(
        "gguf file '{}': tensor count {} cannot fit in the {} bytes after the header (each "
        "tensor info takes at least {})",
        file, n_tensors, c.left(), kMinTensorBytes);

  // ---- metadata ----
  f.metadata_.reserve(capped(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string where_i = fmt::format("metadata key #{}", i);
    std::string key = c.str(where_i, "key");
    const std::string where = fmt::format("key '{}'", key);
    if (key.empty()) fail("gguf file '{}': {}: empty key", file, where_i);
    if (key.size() > kMaxKeyBytes)
      fail("gguf file '{}': {}: key of {} bytes exceeds the {}-byte limit", file, where_i,
           key.size(), kMaxKeyBytes);
    if (!f.key_index_.emplace(key, f.metadata_.size()).second)
      fail("gguf file '{}': {}: duplicate key (metadata #{} repeats it)", file, where, i);
    const gguf_type t = gguf_codec::read_type(c, where, "value type");
    gguf_value v = gguf_codec::read(c, t, where, 0);
    f.metadata_.push_back(gguf_kv{std::move(key), std::move(v)});
  }
  if (const gguf_value* a = f.find_value(kAlignmentKey)) {
    if (a->type() != gguf_type::u32)
      fail("gguf file '{}': key '{}': must be a uint32, is a {}", file, kAlignmentKey,
           gguf_type_name(a->type()));
    const auto al = static_cast<uint32_t>(a->scalar_bits());
    if (!std::has_single_bit(al))
      fail("gguf file '{}': key '{}': alignment {} is not a power of two", file, kAlignmentKey, al);
    f.alignment_ = al;
  }

  // ---- tensor infos ----
  f.tensors_.reserve(capped(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const std::string where_i = fmt::format("tensor #{}", i);
    std::string name = c.str(where_i, "name");
    const std::string where = fmt::format("tensor '{}'", name);
    if (name.empty()) fail("gguf file '{}': {}: empty name", file, where_i);
    if (name.size() > kMaxNameRead)
      fail("gguf file '{}': {}: name of {} bytes exceeds the {}-byte limit", file, where,
           name.size(), kMaxNameRead);
    if (!f.index_.emplace(name, f.tensors_.size()).second)
      fail("gguf file '{}': {}: duplicate tensor name (tensor #{} repeats it)", file, where, i);
    const auto n_dims = c.get<uint32_t>(where, "n_dims");
    if (n_dims > kMaxDims)
      fail("gguf file '{}': {}: {} dimensions, more than the {} ggml supports", file, where, n_dims,
           kMaxDims);
    std::vector<uint64_t> dims(n_dims);
    for (auto& d : dims) d = c.get<uint64_t>(where, "dimension");
    const auto type = c.get<uint32_t>(where, "ggml type");
    const auto offset = c.get<uint64_t>(where, "data offset");
    const size_check sz = tensor_size(type, dims);
    if (!sz.problem.empty()) fail("gguf file '{}': {}: {}", file, where, sz.problem);
    if (offset % f.alignment_ != 0)
      fail("gguf file '{}': {}: data offset {} is not a multiple of the alignment {}", file, where,
           offset, f.alignment_);
    f.tensors_.push_back(gguf_tensor{std::move(name), type, std::move(dims), offset, nullptr,
                                     static_cast<std::size_t>(sz.bytes)});
  }

  // ---- data section ----
  // c.pos <= size < 2^64 - alignment, so the rounding cannot overflow.
  f.data_offset_ = align_up(c.pos, f.alignment_);
  for (auto& t : f.tensors_) {
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(f.data_offset_, t.offset, &begin) ||
        __builtin_add_overflow(begin, uint64_t{t.nbytes}, &end) || end > size)
      fail(
          "gguf file '{}': tensor '{}': {} {} at data offset {} ({} bytes) ends past the end of "
          "the file ({} bytes; data section at {}): truncated?",
          file, t.name, ggml_type_info(t.type)->name, dims_text(t.dims), t.offset, t.nbytes, size,
          f.data_offset_);
    t.data = base + begin;
  }
  std::vector<std::size_t> order(f.tensors_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return f.tensors_[a].offset < f.tensors_[b].offset;
  });
  const gguf_tensor* reach = nullptr;  // the non-empty tensor ending furthest so far
  for (std::size_t i : order) {
    const gguf_tensor& t = f.tensors_[i];
    if (t.nbytes == 0) continue;
    if (reach != nullptr && t.offset < reach->offset + reach->nbytes)
      fail("gguf file '{}': tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data section",
           file, reach->name, reach->offset, reach->offset + reach->nbytes, t.name, t.offset,
           t.offset + t.nbytes);
    if (reach == nullptr || t.offset + t.nbytes > reach->offset + reach->nbytes) reach = &t;
  }
}

std::vector<std::string_view> gguf_file::keys() const {
  std::vector<std::string_view> out;
  out.reserve(metadata_.size());
  for (const auto& kv : metadata_) out.emplace_back(kv.key);
  return out;
}

const gguf_value* gguf_file::find_value(std::string_view key) const {
  const auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].value;
}

const gguf_value& gguf_file::value(std::string_view key) const {
  if (const gguf_value* v = find_value(key)) return *v;
  fail("gguf file '{}': no metadata key '{}' (the file has {} keys)", path_.string(), key,
       metadata_.size());
}

void gguf_file::wrong_type(std::string_view key, const gguf_value& v,
                           std::string_view wanted) const {
  const std::string is =
      v.is_array() ? fmt::format("an array of {} {}", v.size(), gguf_type_name(v.elem_type()))
                   : fmt::format("a {}", gguf_type_name(v.type()));
  fail("gguf file '{}': key '{}': expected {}, found {}", path_.string(), key, wanted, is);
}

std::string gguf_file::get_string(std::string_view key) const {
  const gguf_value& v = value(key);
  if (const std::string* s = v.as_string()) return *s;
  wrong_type(key, v, "a string");
}

int64_t gguf_file::get_int(std::string_view key) const {
  const gguf_value& v = value(key);
  if (const auto i = v.as_int()) return *i;
  if (v.type() == gguf_type::u64)
    fail("gguf file '{}': key '{}': uint64 {} does not fit in int64", path_.string(), key,
         v.scalar_bits());
  wrong_type(key, v, "an integer");
}

double gguf_file::get_float(std::string_view key) const {
  const gguf_value& v = value(key);
  if (const auto x = v.as_float()) return *x;
  wrong_type(key, v, "a float32 or float64");
}

bool gguf_file::get_bool(std::string_view key) const {
  const gguf_value& v = value(key);
  if (const auto b = v.as_bool()) return *b;
  wrong_type(key, v, "a bool");
}

std::vector<std::string> gguf_file::get_strings(std::string_view key) const {
  const gguf_value& v = value(key);
  if (const auto* s = v.as_strings()) return *s;
  wrong_type(key, v, "an array of strings");
}

std::vector<int64_t> gguf_file::get_ints(std::string_view key) const {
  const gguf_value& v = value(key);
  if (auto i = v.as_ints()) return std::move(*i);
  if (v.is_array() && v.elem_type() == gguf_type::u64)
    fail("gguf file '{}': key '{}': a uint64 element does not fit in int64", path_.string(), key);
  wrong_type(key, v, "an array of integers");
}

std::vector<double> gguf_file::get_floats(std::string_view key) const {
  const gguf_value& v = value(key);
  if (auto x = v.as_floats()) return std::move(*x);
  wrong_type(key, v, "an array of float32 or float64");
}

const gguf_tensor* gguf_file::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const gguf_tensor& gguf_file::at(std::string_view name) const {
  if (const gguf_tensor* t = find(name)) return *t;
  fail("gguf file '{}': no tensor named '{}' (the file has {} tensors: {})", path_.string(), name,
       tensors_.size(), first_names(tensors_));
}

}  // namespace zf::storage
