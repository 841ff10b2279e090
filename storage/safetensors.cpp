#include "storage/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"

namespace zf::storage {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The Hugging Face reader refuses headers above 100 MB; so do we (a corrupt length field should
// not make us parse gigabytes).
constexpr std::uint64_t kMaxHeader = 100'000'000;

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

std::size_t dtype_size(std::string_view d) {
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "U8" || d == "I8" || d == "BOOL" || d == "F8_E5M2" || d == "F8_E4M3") return 1;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  return 0;
}

safetensors_file safetensors_file::open(const fs::path& p) {
  safetensors_file f;
  f.path_ = p;
  // a FIFO or folder refused by name; shorter than the 8-byte header length field: truncated
  f.map_ = mapped_file::open(p, "safetensors file", 8);
  parse(f, p.string(), reinterpret_cast<const std::byte*>(f.map_.data()), f.map_.size());
  return f;
}

safetensors_file safetensors_file::from_bytes(std::vector<std::byte> bytes,
                                              const std::string& name) {
  safetensors_file f;
  f.path_ = name;
  f.owned_ = std::move(bytes);
  if (f.owned_.size() < 8)
    fail("safetensors file '{}': truncated: {} bytes, shorter than the 8-byte header length field",
         name, f.owned_.size());
  parse(f, name, f.owned_.data(), f.owned_.size());
  return f;
}

void safetensors_file::parse(safetensors_file& f, const std::string& file, const std::byte* base,
                             std::size_t size) {
  const auto n = load<std::uint64_t>(base);
  if (n == 0) fail("safetensors file '{}': header length is 0", file);
  if (n > size - 8)
    fail(
        "safetensors file '{}': header length {} exceeds the {} bytes that follow the length "
        "field (truncated, or not a safetensors file)",
        file, n, size - 8);
  if (n > kMaxHeader)
    fail("safetensors file '{}': header length {} exceeds the {}-byte limit", file, n, kMaxHeader);

  const char* hbeg = reinterpret_cast<const char*>(base + 8);
  const char* hend = hbeg + n;
  if (*hbeg != '{') fail("safetensors file '{}': header does not start with '{{'", file);

  // Top-level keys are checked for duplicates (nlohmann would silently keep the last one).
  std::set<std::string> seen;
  json header;
  try {
    header = json::parse(hbeg, hend, [&](int depth, json::parse_event_t ev, json& parsed) {
      if (ev == json::parse_event_t::key && depth == 1) {
        const auto& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second)
          fail("safetensors file '{}': header has duplicate key '{}'", file, k);
      }
      return true;
    });
  } catch (const json::exception& e) {
    fail("safetensors file '{}': header is not valid JSON: {}", file, e.what());
  }
  if (!header.is_object()) fail("safetensors file '{}': header is not a JSON object", file);

  const std::byte* data = base + 8 + n;
  const std::uint64_t data_size = size - 8 - n;

  struct span {
    std::uint64_t begin, end;
  };
  std::vector<span> spans;
  for (const auto& [key, val] : header.items()) {
    if (key == "__metadata__") {
      if (!val.is_object())
        fail("safetensors file '{}': __metadata__ is not an object of strings", file);
      for (const auto& [mk, mv] : val.items()) {
        if (!mv.is_string())
          fail("safetensors file '{}': __metadata__ value for '{}' is not a string", file, mk);
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    if (!val.is_object())
      fail("safetensors file '{}': tensor '{}': entry is not an object", file, key);
    const auto dt = val.find("dtype");
    if (dt == val.end() || !dt->is_string())
      fail("safetensors file '{}': tensor '{}': missing string \"dtype\"", file, key);
    const std::string dtype = dt->get<std::string>();
    const std::size_t esize = dtype_size(dtype);
    if (esize == 0)
      fail("safetensors file '{}': tensor '{}': unknown dtype '{}'", file, key, dtype);

    const auto sh = val.find("shape");
    if (sh == val.end() || !sh->is_array())
      fail("safetensors file '{}': tensor '{}': missing array \"shape\"", file, key);
    std::vector<int64_t> shape;
    std::uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
        fail(
            "safetensors file '{}': tensor '{}': shape {} has an entry that is not a "
            "non-negative integer",
            file, key, sh->dump());
      const auto dim = d.get<std::uint64_t>();
      if (__builtin_mul_overflow(numel, dim, &numel))
        fail("safetensors file '{}': tensor '{}': shape {} overflows", file, key, sh->dump());
      shape.push_back(static_cast<int64_t>(dim));
    }
    std::uint64_t need = 0;
    if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(esize), &need))
      fail("safetensors file '{}': tensor '{}': shape {} overflows", file, key, sh->dump());

    const auto off = val.find("data_offsets");
    if (off == val.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      fail(
          "safetensors file '{}': tensor '{}': \"data_offsets\" must be [begin, end] of "
          "non-negative integers",
          file, key);
    const auto b = (*off)[0].get<std::uint64_t>();
    const auto e = (*off)[1].get<std::uint64_t>();
    if (b > e)
      fail("safetensors file '{}': tensor '{}': data_offsets [{}, {}] has begin > end", file, key,
           b, e);
    if (e - b != need)
      fail(
          "safetensors file '{}': tensor '{}': {} of shape {} needs {} bytes but data_offsets "
          "[{}, {}] span {}",
          file, key, dtype, sh->dump(), need, b, e, e - b);
    if (e > data_size)
      fail(
          "safetensors file '{}': tensor '{}': data_offsets [{}, {}] out of range: the data "
          "section is {} bytes (file truncated?)",
          file, key, b, e, data_size);
    f.tensors_.push_back(
        st_tensor{key, dtype, std::move(shape), data + b, static_cast<std::size_t>(need)});
    spans.push_back(span{b, e});
  }

  // File order, then overlap check between consecutive non-empty spans.
  std::vector<std::size_t> order(f.tensors_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (spans[a].begin != spans[b].begin) return spans[a].begin < spans[b].begin;
    if (spans[a].end != spans[b].end) return spans[a].end < spans[b].end;
    return f.tensors_[a].name < f.tensors_[b].name;
  });
  std::vector<st_tensor> sorted;
  sorted.reserve(order.size());
  const std::size_t none = std::numeric_limits<std::size_t>::max();
  std::size_t prev = none;  // index (into spans) of the non-empty span reaching furthest so far
  for (std::size_t i : order) {
    if (spans[i].end > spans[i].begin) {
      if (prev != none && spans[i].begin < spans[prev].end)
        fail(
            "safetensors file '{}': tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data "
            "section",
            file, f.tensors_[prev].name, spans[prev].begin, spans[prev].end, f.tensors_[i].name,
            spans[i].begin, spans[i].end);
      if (prev == none || spans[i].end > spans[prev].end) prev = i;
    }
    sorted.push_back(f.tensors_[i]);
  }
  f.tensors_ = std::move(sorted);
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.index_.emplace(f.tensors_[i].name, i);
}

const st_tensor* safetensors_file::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const st_tensor& safetensors_file::at(std::string_view name) const {
  if (const st_tensor* t = find(name)) return *t;
  fail("safetensors file '{}': no tensor named '{}' (the file has {} tensors: {})", path_.string(),
       name, tensors_.size(), first_names(tensors_));
}

std::vector<float> safetensors_file::to_f32(std::string_view name) const {
  const st_tensor& t = at(name);
  const std::size_t n = t.nbytes / dtype_size(t.dtype);
  // The conversions themselves live in runtime/core/dtype (kernels/convert.hpp for f16/bf16).
  const std::optional<zf::dtype> d = parse_dtype(t.dtype);
  if (!d || !is_float(*d)) {
    fail("safetensors file '{}': tensor '{}' has dtype {}; to_f32 reads F32, F16, BF16 or F64",
         path_.string(), t.name, t.dtype);
  }
  std::vector<float> out(n);
  zf::to_f32(t.data, *d, out.data(), n);
  return out;
}

namespace {
template <class T>
void ints_to_i32(const st_tensor& t, std::vector<int32_t>& out, const std::string& file) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    const T v = load<T>(t.data + sizeof(T) * i);
    if (!std::in_range<int32_t>(v))
      fail("safetensors file '{}': tensor '{}' ({}) element {} = {} does not fit in int32", file,
           t.name, t.dtype, i, v);
    out[i] = static_cast<int32_t>(v);
  }
}
}  // namespace

std::vector<int32_t> safetensors_file::to_i32(std::string_view name) const {
  const st_tensor& t = at(name);
  const std::size_t n = t.nbytes / dtype_size(t.dtype);
  std::vector<int32_t> out(n);
  const std::string file = path_.string();
  if (t.dtype == "I32") {
    if (n) std::memcpy(out.data(), t.data, t.nbytes);
  } else if (t.dtype == "I64") {
    ints_to_i32<std::int64_t>(t, out, file);
  } else if (t.dtype == "U32") {
    ints_to_i32<std::uint32_t>(t, out, file);
  } else if (t.dtype == "U64") {
    ints_to_i32<std::uint64_t>(t, out, file);
  } else if (t.dtype == "I16") {
    ints_to_i32<std::int16_t>(t, out, file);
  } else if (t.dtype == "U16") {
    ints_to_i32<std::uint16_t>(t, out, file);
  } else if (t.dtype == "I8") {
    ints_to_i32<std::int8_t>(t, out, file);
  } else if (t.dtype == "U8") {
    ints_to_i32<std::uint8_t>(t, out, file);
  } else {
    fail(
        "safetensors file '{}': tensor '{}' has dtype {}; to_i32 reads integer dtypes (I32, I64, "
        "...)",
        file, t.name, t.dtype);
  }
  return out;
}

void write_safetensors(const fs::path& p, const std::vector<st_write>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string file = p.string();
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    if (t.name.empty())
      fail("safetensors file '{}': cannot write a tensor with an empty name", file);
    if (t.name == "__metadata__")
      fail("safetensors file '{}': '__metadata__' is reserved, not a tensor name", file);
    if (!names.insert(t.name).second)
      fail("safetensors file '{}': tensor '{}' given twice", file, t.name);
    const std::size_t esize = dtype_size(t.dtype);
    if (esize == 0)
      fail("safetensors file '{}': tensor '{}': unknown dtype '{}'", file, t.name, t.dtype);
    std::uint64_t need = esize;
    for (int64_t d : t.shape) {
      if (d < 0) fail("safetensors file '{}': tensor '{}': negative dimension {}", file, t.name, d);
      if (__builtin_mul_overflow(need, static_cast<std::uint64_t>(d), &need))
        fail("safetensors file '{}': tensor '{}': shape overflows", file, t.name);
    }
    if (need != t.nbytes)
      fail("safetensors file '{}': tensor '{}': {} x {} elements needs {} bytes, got {}", file,
           t.name, t.dtype, need / esize, need, t.nbytes);
    if (t.nbytes > 0 && t.data == nullptr)
      fail("safetensors file '{}': tensor '{}': null data", file, t.name);
  }

  // Largest element size first keeps every tensor aligned to its element size (as the Hugging
  // Face writer does); within a size the caller's order is kept.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return dtype_size(tensors[a].dtype) > dtype_size(tensors[b].dtype);
  });

  std::string hs;
  try {
    json header = json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::uint64_t off = 0;
    for (std::size_t i : order) {
      const auto& t = tensors[i];
      header[t.name] = {
          {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes}}};
      off += t.nbytes;
    }
    hs = header.dump();
  } catch (const json::exception& e) {
    fail("safetensors file '{}': cannot encode header: {}", file, e.what());
  }
  hs.append((8 - hs.size() % 8) % 8, ' ');
  const std::uint64_t hlen = hs.size();

  write_pieces_atomic(p, "safetensors file", [&](const piece_writer& put) {
    put(&hlen, 8);
    put(hs.data(), hs.size());
    for (std::size_t i : order) put(tensors[i].data, tensors[i].nbytes);
  });
}

}  // namespace zf::storage
