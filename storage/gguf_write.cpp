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
#include "storage/gguf.hpp"
#include "storage/gguf_detail.hpp"

namespace zf::storage {

namespace fs = std::filesystem;
using namespace gguf_detail;

namespace {

constexpr std::size_t kMaxNameWrite = 63;  // ggml's: GGML_MAX_NAME 64 with the NUL
constexpr uint32_t kDefaultAlignment = 32;

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
