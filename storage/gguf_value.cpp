// gguf_value (storage/gguf.hpp): its factories and accessors, and gguf_codec
// (storage/gguf_detail.hpp), which builds values, encodes them for the writer and decodes them for
// the reader.
#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include "runtime/core/error.hpp"
#include "storage/gguf.hpp"
#include "storage/gguf_detail.hpp"

namespace zf::storage {

using namespace gguf_detail;

namespace {

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

}  // namespace

// ---- gguf_codec ----------------------------------------------------------------------------

template <class T>
gguf_value gguf_codec::scalar(gguf_type t, T v) {
  static_assert(sizeof(T) <= 8);
  gguf_value out;
  out.type_ = t;
  std::memcpy(&out.bits_, &v, sizeof(T));
  return out;
}

template <class T>
gguf_value gguf_codec::array(gguf_type elem, const std::vector<T>& v) {
  gguf_value out;
  out.type_ = gguf_type::array;
  out.elem_ = elem;
  out.raw_.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.raw_.data(), v.data(), out.raw_.size());
  return out;
}

gguf_value gguf_codec::strings(std::vector<std::string> s) {
  gguf_value out;
  out.type_ = gguf_type::array;
  out.elem_ = gguf_type::string;
  out.strings_ = std::move(s);
  return out;
}

gguf_value gguf_codec::arrays(std::vector<gguf_value> a) {
  gguf_value out;
  out.type_ = gguf_type::array;
  out.elem_ = gguf_type::array;
  out.arrays_ = std::move(a);
  return out;
}

int gguf_codec::depth(const gguf_value& v, bool& ok) {
  if (v.type_ != gguf_type::array) return 0;
  int d = 1;
  if (v.elem_ == gguf_type::array)
    for (const auto& a : v.arrays_) {
      if (a.type_ != gguf_type::array) ok = false;
      d = std::max(d, 1 + depth(a, ok));
    }
  return d;
}

void gguf_codec::append_u32(std::string& out, uint32_t x) {
  out.append(reinterpret_cast<const char*>(&x), 4);
}

void gguf_codec::append_u64(std::string& out, uint64_t x) {
  out.append(reinterpret_cast<const char*>(&x), 8);
}

void gguf_codec::append_str(std::string& out, std::string_view s) {
  append_u64(out, s.size());
  out.append(s);
}

void gguf_codec::encode(std::string& out, const gguf_value& v) {
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

gguf_type gguf_codec::read_type(cursor& c, std::string_view where, std::string_view what) {
  const auto t = c.get<uint32_t>(where, what);
  if (!known_type(t))
    fail("gguf file '{}': {}: unknown {} {} at offset {} (known: 0 to 12)", c.file, where, what, t,
         c.pos - 4);
  return static_cast<gguf_type>(t);
}

uint8_t gguf_codec::check_bool(cursor& c, uint8_t b, std::string_view where) {
  if (b > 1)
    fail("gguf file '{}': {}: bool value {} at offset {} is neither 0 nor 1", c.file, where, b,
         c.pos - 1);
  return b;
}

gguf_value gguf_codec::read(cursor& c, gguf_type t, std::string_view where, int depth) {
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

// ---- gguf_value ----------------------------------------------------------------------------

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

}  // namespace zf::storage
