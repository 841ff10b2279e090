#include "storage/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>

#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"

namespace zf::storage {

static_assert(std::endian::native == std::endian::little,
              "GGUF files are read as little-endian; big-endian hosts are not supported");

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kHeaderBytes = 24;        // magic, version, tensor_count, metadata_kv_count
constexpr std::size_t kMinKvBytes = 8 + 4 + 1;  // empty key length, value type, a uint8
constexpr std::size_t kMinTensorBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset
constexpr std::size_t kMaxKeyBytes = 65535;             // the spec's limit on a key
constexpr std::size_t kMaxNameRead = 64;                // the spec's limit on a tensor name
constexpr std::size_t kMaxNameWrite = 63;               // ggml's: GGML_MAX_NAME 64 with the NUL
constexpr uint32_t kMaxDims = 4;
constexpr uint32_t kDefaultAlignment = 32;
constexpr std::string_view kAlignmentKey = "general.alignment";
// A count is checked against the bytes left before anything is allocated, but one entry in
// memory (a gguf_value, a gguf_tensor) is larger than its smallest encoding, so reservations are
// capped as well: past this, vectors grow only as entries are actually read.
constexpr uint64_t kMaxReserve = 1 << 16;

std::size_t capped(uint64_t n) {
  return static_cast<std::size_t>(std::min(n, kMaxReserve));
}

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

// Bytes of one fixed-size metadata value; 0 for string and array (and unknown types).
std::size_t fixed_size(gguf_type t) {
  switch (t) {
    case gguf_type::u8:
    case gguf_type::i8:
    case gguf_type::boolean:
      return 1;
    case gguf_type::u16:
    case gguf_type::i16:
      return 2;
    case gguf_type::u32:
    case gguf_type::i32:
    case gguf_type::f32:
      return 4;
    case gguf_type::u64:
    case gguf_type::i64:
    case gguf_type::f64:
      return 8;
    default:
      return 0;
  }
}

bool known_type(uint32_t t) {
  return t <= static_cast<uint32_t>(gguf_type::f64);
}

// The fewest bytes one value of type t takes in a file.
std::size_t min_size(gguf_type t) {
  if (t == gguf_type::string) return 8;
  if (t == gguf_type::array) return 4 + 8;
  return fixed_size(t);
}

bool is_int_type(gguf_type t) {
  switch (t) {
    case gguf_type::u8:
    case gguf_type::i8:
    case gguf_type::u16:
    case gguf_type::i16:
    case gguf_type::u32:
    case gguf_type::i32:
    case gguf_type::u64:
    case gguf_type::i64:
      return true;
    default:
      return false;
  }
}

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// An integer of type t from its bytes; nullopt for a uint64 above INT64_MAX.
std::optional<int64_t> int_of(gguf_type t, const std::byte* p) {
  switch (t) {
    case gguf_type::u8:
      return load<uint8_t>(p);
    case gguf_type::i8:
      return load<int8_t>(p);
    case gguf_type::u16:
      return load<uint16_t>(p);
    case gguf_type::i16:
      return load<int16_t>(p);
    case gguf_type::u32:
      return load<uint32_t>(p);
    case gguf_type::i32:
      return load<int32_t>(p);
    case gguf_type::u64: {
      const auto v = load<uint64_t>(p);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(v);
    }
    case gguf_type::i64:
      return load<int64_t>(p);
    default:
      return std::nullopt;
  }
}

std::string errno_text(int e) {
  return std::strerror(e);
}

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const void* data, std::size_t n, const fs::path& tmp) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const std::size_t chunk = std::min<std::size_t>(n, std::size_t{1} << 30);
    const ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("gguf file '{}': write failed: {}", tmp.string(), errno_text(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void write_zeros(int fd, uint64_t n, const fs::path& tmp) {
  static const std::array<char, 4096> zeros{};
  while (n > 0) {
    const auto k = static_cast<std::size_t>(std::min<uint64_t>(n, zeros.size()));
    write_all(fd, zeros.data(), k, tmp);
    n -= k;
  }
}

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;  // callers keep x + a below 2^64
}

std::string dims_text(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// The bytes a tensor takes, or the reason it cannot (for messages after "tensor 'x': ").
struct size_check {
  uint64_t bytes = 0;
  std::string problem;  // empty when fine
};

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

}  // namespace

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

// ---- gguf_value ----------------------------------------------------------------------------

// Builds and encodes values (a friend of gguf_value), and reads them from a file.
struct gguf_codec {
  template <class T>
  static gguf_value scalar(gguf_type t, T v) {
    static_assert(sizeof(T) <= 8);
    gguf_value out;
    out.type_ = t;
    std::memcpy(&out.bits_, &v, sizeof(T));
    return out;
  }
  template <class T>
  static gguf_value array(gguf_type elem, const std::vector<T>& v) {
    gguf_value out;
    out.type_ = gguf_type::array;
    out.elem_ = elem;
    out.raw_.resize(v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(out.raw_.data(), v.data(), out.raw_.size());
    return out;
  }
  static gguf_value strings(std::vector<std::string> s) {
    gguf_value out;
    out.type_ = gguf_type::array;
    out.elem_ = gguf_type::string;
    out.strings_ = std::move(s);
    return out;
  }
  static gguf_value arrays(std::vector<gguf_value> a) {
    gguf_value out;
    out.type_ = gguf_type::array;
    out.elem_ = gguf_type::array;
    out.arrays_ = std::move(a);
    return out;
  }

  // Nesting depth of v (0 for a scalar), and whether every array of arrays holds only arrays.
  static int depth(const gguf_value& v, bool& ok) {
    if (v.type_ != gguf_type::array) return 0;
    int d = 1;
    if (v.elem_ == gguf_type::array)
      for (const auto& a : v.arrays_) {
        if (a.type_ != gguf_type::array) ok = false;
        d = std::max(d, 1 + depth(a, ok));
      }
    return d;
  }

  static void append_u32(std::string& out, uint32_t x) {
    out.append(reinterpret_cast<const char*>(&x), 4);
  }
  static void append_u64(std::string& out, uint64_t x) {
    out.append(reinterpret_cast<const char*>(&x), 8);
  }
  static void append_str(std::string& out, std::string_view s) {
    append_u64(out, s.size());
    out.append(s);
  }
  // The value's bytes (without its type), as they follow the type in a file.
  static void encode(std::string& out, const gguf_value& v) {
    switch (v.type_) {
      case gguf_type::string:
        append_str(out, v.str_);
        return;
      case gguf_type::array:
        append_u32(out, static_cast<uint32_t>(v.elem_));
        append_u64(out, v.size());
        if (v.elem_ == gguf_type::string) {
          for (const auto& s : v.strings_) append_str(out, s);
        } else if (v.elem_ == gguf_type::array) {
          for (const auto& a : v.arrays_) encode(out, a);
        } else {
          out.append(reinterpret_cast<const char*>(v.raw_.data()), v.raw_.size());
        }
        return;
      default:
        out.append(reinterpret_cast<const char*>(&v.bits_), fixed_size(v.type_));
    }
  }

  // ---- reading ----
  struct cursor {
    const std::byte* base;
    std::size_t size;
    std::size_t pos;
    const std::string& file;

    std::size_t left() const { return size - pos; }
    void need(uint64_t n, std::string_view where, std::string_view what) const {
      if (n > left())
        fail(
            "gguf file '{}': {}: truncated: {} needs {} bytes at offset {} but the file has {} "
            "left",
            file, where, what, n, pos, left());
    }
    template <class T>
    T get(std::string_view where, std::string_view what) {
      need(sizeof(T), where, what);
      const T v = load<T>(base + pos);
      pos += sizeof(T);
      return v;
    }
    std::string str(std::string_view where, std::string_view what) {
      if (left() < 8)
        fail(
            "gguf file '{}': {}: truncated: {} length needs 8 bytes at offset {} but the file "
            "has {} left",
            file, where, what, pos, left());
      const auto n = get<uint64_t>(where, what);
      if (n > left())
        fail(
            "gguf file '{}': {}: {} length {} at offset {} runs past the end of the file ({} "
            "bytes left)",
            file, where, what, n, pos - 8, left());
      std::string s(reinterpret_cast<const char*>(base + pos), static_cast<std::size_t>(n));
      pos += static_cast<std::size_t>(n);
      return s;
    }
  };

  static gguf_type read_type(cursor& c, std::string_view where, std::string_view what) {
    const auto t = c.get<uint32_t>(where, what);
    if (!known_type(t))
      fail("gguf file '{}': {}: unknown {} {} at offset {} (known: 0 to 12)", c.file, where, what,
           t, c.pos - 4);
    return static_cast<gguf_type>(t);
  }

  static uint8_t check_bool(cursor& c, uint8_t b, std::string_view where) {
    if (b > 1)
      fail("gguf file '{}': {}: bool value {} at offset {} is neither 0 nor 1", c.file, where, b,
           c.pos - 1);
    return b;
  }

  static gguf_value read(cursor& c, gguf_type t, std::string_view where, int depth) {
    gguf_value v;
    v.type_ = t;
    if (t == gguf_type::string) {
      v.str_ = c.str(where, "string");
      return v;
    }
    if (t != gguf_type::array) {
      const std::size_t n = fixed_size(t);
      c.need(n, where, gguf_type_name(t));
      std::memcpy(&v.bits_, c.base + c.pos, n);
      c.pos += n;
      if (t == gguf_type::boolean) check_bool(c, static_cast<uint8_t>(v.bits_), where);
      return v;
    }
    if (depth >= kGgufMaxArrayDepth)
      fail("gguf file '{}': {}: arrays nested deeper than {} levels", c.file, where,
           kGgufMaxArrayDepth);
    v.elem_ = read_type(c, where, "array element type");
    const auto count = c.get<uint64_t>(where, "array length");
    const std::size_t each = min_size(v.elem_);
    if (count > c.left() / each)
      fail(
          "gguf file '{}': {}: array of {} {} values at offset {} cannot fit in the {} bytes left "
          "in the file",
          c.file, where, count, gguf_type_name(v.elem_), c.pos - 8, c.left());
    const auto n = static_cast<std::size_t>(count);
    if (v.elem_ == gguf_type::string) {
      v.strings_.reserve(capped(n));
      for (std::size_t i = 0; i < n; ++i) v.strings_.push_back(c.str(where, "string"));
    } else if (v.elem_ == gguf_type::array) {
      v.arrays_.reserve(capped(n));
      for (std::size_t i = 0; i < n; ++i) v.arrays_.push_back(read(c, v.elem_, where, depth + 1));
    } else {
      v.raw_.assign(c.base + c.pos, c.base + c.pos + n * each);
      if (v.elem_ == gguf_type::boolean)
        for (std::size_t i = 0; i < n; ++i) {
          c.pos += 1;
          check_bool(c, static_cast<uint8_t>(v.raw_[i]), where);
        }
      else
        c.pos += n * each;
    }
    return v;
  }
};

gguf_value gguf_value::u8(uint8_t v) {
  return gguf_codec::scalar(gguf_type::u8, v);
}
gguf_value gguf_value::i8(int8_t v) {
  return gguf_codec::scalar(gguf_type::i8, v);
}
gguf_value gguf_value::u16(uint16_t v) {
  return gguf_codec::scalar(gguf_type::u16, v);
}
gguf_value gguf_value::i16(int16_t v) {
  return gguf_codec::scalar(gguf_type::i16, v);
}
gguf_value gguf_value::u32(uint32_t v) {
  return gguf_codec::scalar(gguf_type::u32, v);
}
gguf_value gguf_value::i32(int32_t v) {
  return gguf_codec::scalar(gguf_type::i32, v);
}
gguf_value gguf_value::f32(float v) {
  return gguf_codec::scalar(gguf_type::f32, v);
}
gguf_value gguf_value::boolean(bool v) {
  return gguf_codec::scalar(gguf_type::boolean, static_cast<uint8_t>(v ? 1 : 0));
}
gguf_value gguf_value::string(std::string v) {
  gguf_value out;
  out.type_ = gguf_type::string;
  out.str_ = std::move(v);
  return out;
}
gguf_value gguf_value::u64(uint64_t v) {
  return gguf_codec::scalar(gguf_type::u64, v);
}
gguf_value gguf_value::i64(int64_t v) {
  return gguf_codec::scalar(gguf_type::i64, v);
}
gguf_value gguf_value::f64(double v) {
  return gguf_codec::scalar(gguf_type::f64, v);
}

template <class T>
gguf_value gguf_value::array(const std::vector<T>& v) {
  constexpr gguf_type t = std::is_same_v<T, uint8_t>    ? gguf_type::u8
                          : std::is_same_v<T, int8_t>   ? gguf_type::i8
                          : std::is_same_v<T, uint16_t> ? gguf_type::u16
                          : std::is_same_v<T, int16_t>  ? gguf_type::i16
                          : std::is_same_v<T, uint32_t> ? gguf_type::u32
                          : std::is_same_v<T, int32_t>  ? gguf_type::i32
                          : std::is_same_v<T, float>    ? gguf_type::f32
                          : std::is_same_v<T, uint64_t> ? gguf_type::u64
                          : std::is_same_v<T, int64_t>  ? gguf_type::i64
                                                        : gguf_type::f64;
  return gguf_codec::array(t, v);
}
template gguf_value gguf_value::array(const std::vector<uint8_t>&);
template gguf_value gguf_value::array(const std::vector<int8_t>&);
template gguf_value gguf_value::array(const std::vector<uint16_t>&);
template gguf_value gguf_value::array(const std::vector<int16_t>&);
template gguf_value gguf_value::array(const std::vector<uint32_t>&);
template gguf_value gguf_value::array(const std::vector<int32_t>&);
template gguf_value gguf_value::array(const std::vector<float>&);
template gguf_value gguf_value::array(const std::vector<uint64_t>&);
template gguf_value gguf_value::array(const std::vector<int64_t>&);
template gguf_value gguf_value::array(const std::vector<double>&);

gguf_value gguf_value::bool_array(const std::vector<bool>& v) {
  std::vector<uint8_t> b(v.begin(), v.end());
  return gguf_codec::array(gguf_type::boolean, b);
}
gguf_value gguf_value::string_array(std::vector<std::string> v) {
  return gguf_codec::strings(std::move(v));
}
gguf_value gguf_value::array_of_arrays(std::vector<gguf_value> v) {
  return gguf_codec::arrays(std::move(v));
}

std::size_t gguf_value::size() const {
  if (type_ != gguf_type::array) return 1;
  if (elem_ == gguf_type::string) return strings_.size();
  if (elem_ == gguf_type::array) return arrays_.size();
  return raw_.size() / fixed_size(elem_);
}

std::optional<int64_t> gguf_value::as_int() const {
  if (!is_int_type(type_)) return std::nullopt;
  return int_of(type_, reinterpret_cast<const std::byte*>(&bits_));
}

std::optional<double> gguf_value::as_float() const {
  if (type_ == gguf_type::f32) return load<float>(reinterpret_cast<const std::byte*>(&bits_));
  if (type_ == gguf_type::f64) return load<double>(reinterpret_cast<const std::byte*>(&bits_));
  return std::nullopt;
}

std::optional<bool> gguf_value::as_bool() const {
  if (type_ != gguf_type::boolean) return std::nullopt;
  return bits_ != 0;
}

const std::string* gguf_value::as_string() const {
  return type_ == gguf_type::string ? &str_ : nullptr;
}

const std::vector<std::string>* gguf_value::as_strings() const {
  return type_ == gguf_type::array && elem_ == gguf_type::string ? &strings_ : nullptr;
}

std::optional<std::vector<int64_t>> gguf_value::as_ints() const {
  if (type_ != gguf_type::array || !is_int_type(elem_)) return std::nullopt;
  const std::size_t each = fixed_size(elem_);
  std::vector<int64_t> out(raw_.size() / each);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto v = int_of(elem_, raw_.data() + i * each);
    if (!v) return std::nullopt;
    out[i] = *v;
  }
  return out;
}

std::optional<std::vector<double>> gguf_value::as_floats() const {
  if (type_ != gguf_type::array || (elem_ != gguf_type::f32 && elem_ != gguf_type::f64))
    return std::nullopt;
  const std::size_t each = fixed_size(elem_);
  std::vector<double> out(raw_.size() / each);
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = elem_ == gguf_type::f32 ? load<float>(raw_.data() + i * each)
                                     : load<double>(raw_.data() + i * each);
  return out;
}

const std::vector<gguf_value>* gguf_value::as_arrays() const {
  return type_ == gguf_type::array && elem_ == gguf_type::array ? &arrays_ : nullptr;
}

// ---- reader --------------------------------------------------------------------------------

void gguf_file::unmapper::operator()(std::byte* p) const {
  if (p != nullptr) ::munmap(p, size);
}

gguf_file gguf_file::open(const fs::path& p) {
  const std::string file = p.string();
  gguf_file f;
  f.path_ = p;
  std::size_t size = 0;
  {
    fd_guard fd{::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};  // a FIFO must not block
    if (fd.fd < 0) fail("gguf file '{}': cannot open: {}", file, errno_text(errno));
    require_regular(fd.fd, p);  // storage/fs_util: a FIFO, folder or device named, then blocking
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) fail("gguf file '{}': cannot stat: {}", file, errno_text(errno));
    size = static_cast<std::size_t>(st.st_size);
    if (size < kHeaderBytes)
      fail("gguf file '{}': truncated: {} bytes, shorter than the {}-byte header", file, size,
           kHeaderBytes);
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
    if (m == MAP_FAILED) fail("gguf file '{}': mmap failed: {}", file, errno_text(errno));
    f.map_ = std::unique_ptr<std::byte, unmapper>(static_cast<std::byte*>(m), unmapper{size});
  }
  parse(f, file, f.map_.get(), size);
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
  std::string some;
  std::size_t shown = 0;
  for (const auto& t : tensors_) {
    if (shown == 8) {
      some += ", ...";
      break;
    }
    some += (shown++ ? ", " : "") + t.name;
  }
  fail("gguf file '{}': no tensor named '{}' (the file has {} tensors: {})", path_.string(), name,
       tensors_.size(), some);
}

// ---- writer --------------------------------------------------------------------------------

void write_gguf(const fs::path& p, const std::vector<gguf_kv>& metadata,
                const std::vector<gguf_write>& tensors, uint32_t alignment) {
  const std::string file = p.string();
  if (!std::has_single_bit(alignment))
    fail("gguf file '{}': alignment {} is not a power of two", file, alignment);

  // ---- validate and encode the header ----
  std::string head = "GGUF";
  gguf_codec::append_u32(head, 3);
  gguf_codec::append_u64(head, tensors.size());
  const bool add_alignment = alignment != kDefaultAlignment &&
                             std::none_of(metadata.begin(), metadata.end(), [](const gguf_kv& kv) {
                               return kv.key == kAlignmentKey;
                             });
  gguf_codec::append_u64(head, metadata.size() + (add_alignment ? 1 : 0));
  std::set<std::string_view> keys;
  for (const auto& kv : metadata) {
    if (kv.key.empty()) fail("gguf file '{}': cannot write an empty metadata key", file);
    if (kv.key.size() > kMaxKeyBytes)
      fail("gguf file '{}': key '{}...': {} bytes, over the {}-byte limit", file,
           kv.key.substr(0, 40), kv.key.size(), kMaxKeyBytes);
    if (!keys.insert(kv.key).second) fail("gguf file '{}': key '{}' given twice", file, kv.key);
    bool ok = true;
    if (gguf_codec::depth(kv.value, ok) > kGgufMaxArrayDepth)
      fail("gguf file '{}': key '{}': arrays nested deeper than {} levels", file, kv.key,
           kGgufMaxArrayDepth);
    if (!ok)
      fail("gguf file '{}': key '{}': an array of arrays holds a value that is not an array", file,
           kv.key);
    if (kv.key == kAlignmentKey &&
        (kv.value.type() != gguf_type::u32 || kv.value.scalar_bits() != alignment))
      fail("gguf file '{}': key '{}': must be the uint32 {} (the alignment written)", file, kv.key,
           alignment);
    gguf_codec::append_str(head, kv.key);
    gguf_codec::append_u32(head, static_cast<uint32_t>(kv.value.type()));
    gguf_codec::encode(head, kv.value);
  }
  if (add_alignment) {
    gguf_codec::append_str(head, kAlignmentKey);
    gguf_codec::append_u32(head, static_cast<uint32_t>(gguf_type::u32));
    gguf_codec::encode(head, gguf_value::u32(alignment));
  }

  std::set<std::string_view> names;
  uint64_t off = 0;
  std::vector<uint64_t> pads(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (t.name.empty()) fail("gguf file '{}': cannot write a tensor with an empty name", file);
    if (t.name.size() > kMaxNameWrite)
      fail("gguf file '{}': tensor '{}': name of {} bytes, over ggml's limit of {}", file, t.name,
           t.name.size(), kMaxNameWrite);
    if (!names.insert(t.name).second) fail("gguf file '{}': tensor '{}' given twice", file, t.name);
    if (t.dims.size() > kMaxDims)
      fail("gguf file '{}': tensor '{}': {} dimensions, more than the {} ggml supports", file,
           t.name, t.dims.size(), kMaxDims);
    const size_check sz = tensor_size(t.type, t.dims);
    if (!sz.problem.empty()) fail("gguf file '{}': tensor '{}': {}", file, t.name, sz.problem);
    if (sz.bytes != t.nbytes)
      fail("gguf file '{}': tensor '{}': {} {} needs {} bytes, got {}", file, t.name,
           ggml_type_info(t.type)->name, dims_text(t.dims), sz.bytes, t.nbytes);
    if (t.nbytes > 0 && t.data == nullptr)
      fail("gguf file '{}': tensor '{}': null data", file, t.name);
    gguf_codec::append_str(head, t.name);
    gguf_codec::append_u32(head, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) gguf_codec::append_u64(head, d);
    gguf_codec::append_u32(head, t.type);
    gguf_codec::append_u64(head, off);
    const uint64_t padded = align_up(t.nbytes, alignment);
    pads[i] = padded - t.nbytes;
    if (__builtin_add_overflow(off, padded, &off))
      fail("gguf file '{}': tensor '{}': data section size overflows", file, t.name);
  }
  // Padded even without tensors, as ggml's writer does (its reader does not need it then).
  const uint64_t head_pad = align_up(head.size(), alignment) - head.size();

  // ---- write ----
  fs::path tmp = p;
  tmp += ".tmp";
  const std::string tmps = tmp.string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("gguf file '{}': cannot create: {}", tmps, errno_text(errno));
  try {
    write_all(fd, head.data(), head.size(), tmp);
    write_zeros(fd, head_pad, tmp);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      write_all(fd, tensors[i].data, tensors[i].nbytes, tmp);
      write_zeros(fd, pads[i], tmp);
    }
    if (::fsync(fd) != 0) fail("gguf file '{}': fsync failed: {}", tmps, errno_text(errno));
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("gguf file '{}': close failed: {}", tmps, errno_text(errno));
    if (::rename(tmp.c_str(), p.c_str()) != 0)
      fail("gguf file '{}': cannot rename '{}' over it: {}", file, tmps, errno_text(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename durable; a failure here leaves a complete file, so it is not an error.
  fs::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace zf::storage
