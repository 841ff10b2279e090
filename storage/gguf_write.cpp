// write_gguf (storage/gguf.hpp): validates the metadata and tensors, encodes the header (values
// through gguf_codec, gguf_value.cpp) and writes the file atomically.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <set>

#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"
#include "storage/gguf.hpp"
#include "storage/gguf_detail.hpp"

namespace zf::storage {

namespace fs = std::filesystem;
using namespace gguf_detail;

namespace {

constexpr std::size_t kMaxNameWrite = 63;  // ggml's: GGML_MAX_NAME 64 with the NUL
constexpr uint32_t kDefaultAlignment = 32;

}  // namespace

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
  static const std::array<char, 4096> zeros{};
  write_pieces_atomic(p, "gguf file", [&](const piece_writer& put) {
    auto pad = [&](uint64_t n) {
      for (; n > 0; n -= std::min<uint64_t>(n, zeros.size()))
        put(zeros.data(), static_cast<std::size_t>(std::min<uint64_t>(n, zeros.size())));
    };
    put(head.data(), head.size());
    pad(head_pad);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      put(tensors[i].data, tensors[i].nbytes);
      pad(pads[i]);
    }
  });
}

}  // namespace zf::storage
