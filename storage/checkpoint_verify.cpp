// Verifying checkpoints: every file, size, fragment coverage and CRC (storage/checkpoint.hpp),
// float and quantized tensors alike (storage/quant_checkpoint.hpp says what a quantized tensor
// stores).
#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"
#include "storage/checkpoint_format.hpp"
#include "storage/fs_util.hpp"
#include "storage/quant_checkpoint.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
using namespace detail;
namespace {

// CRC of [off, off+len) of an open file, read in pieces.
uint32_t crc_of_range(int fd, uint64_t off, uint64_t len, std::vector<std::byte>& buf,
                      const fs::path& p) {
  uint32_t crc = 0;
  buf.resize(std::min<uint64_t>(len, k_io));
  while (len) {
    const std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(len, buf.size()));
    if (pread_all(fd, buf.data(), n, off, p) != n)
      fail("checkpoint file {} is truncated at byte {}", p.string(), off);
    crc = crc32_of(buf.data(), n, crc);
    off += n;
    len -= n;
  }
  return crc;
}

}  // namespace

verify_report verify_checkpoint(const fs::path& dir) {
  verify_report r;
  checkpoint_manifest m;
  try {
    m = read_checkpoint_manifest(dir);
  } catch (const zf::error& e) {
    r.problems.push_back(e.what());
    return r;
  }
  r.step = m.step;
  auto& probs = r.problems;
  std::map<std::string, std::pair<uint64_t, bool>> files;  // listed size, usable
  for (auto& [name, bytes] : m.files) {
    const fs::path p = m.dir / name;
    std::error_code ec;
    const bool regular = fs::is_regular_file(p, ec);
    const auto size = regular ? fs::file_size(p, ec) : 0;
    bool ok = false;
    if (!regular && fs::exists(p))  // a FIFO, a folder, a device: never opened (it could block)
      probs.push_back(fmt::format("checkpoint file {} is not a regular file", p.string()));
    else if (ec || !regular)
      probs.push_back(fmt::format("checkpoint file {} is missing", p.string()));
    else if (size < bytes)
      probs.push_back(fmt::format("checkpoint file {} is truncated: {} bytes, the manifest says {}",
                                  p.string(), size, bytes));
    else if (size > bytes)
      probs.push_back(fmt::format("checkpoint file {} is corrupt: {} bytes, the manifest says {}",
                                  p.string(), size, bytes));
    else
      ok = true;
    files[name] = {bytes, ok};
  }
  bool present[3] = {m.has_kind(0), m.has_kind(1), m.has_kind(2)};
  std::map<std::string, std::vector<const fragment*>> by_file;
  for (auto& t : m.tensors) {
    std::vector<stored_part> parts;
    try {
      parts = stored_parts(&t.quant, t.shape, present, "tensor '" + t.name + "'");
    } catch (const zf::error& e) {
      probs.push_back(e.what());
      continue;
    }
    if (t.quant.empty() && t.dtype != "F32")
      probs.push_back(fmt::format("tensor '{}' has dtype {}, expected F32", t.name, t.dtype));
    if (!t.quant.empty() && !m.quantized())
      probs.push_back(
          fmt::format("tensor '{}' is quantized but the manifest names no scheme", t.name));
    for (auto& f : t.fragments)
      if (std::none_of(parts.begin(), parts.end(), [&](auto& p) { return p.kind == f.kind; }))
        probs.push_back(fmt::format("tensor '{}' has a {} fragment it should not have", t.name,
                                    kind_name(f.kind)));
    for (auto& part : parts) {
      const int k = part.kind;
      uint64_t covered = 0;
      for (auto& f : t.fragments) {
        if (f.kind != k) continue;
        if (f.dtype != part.type)
          probs.push_back(
              fmt::format("a fragment of '{}' ({}) is stored as {}; this build reads {} there",
                          t.name, kind_name(k), dtype_name(f.dtype), dtype_name(part.type)));
        if (f.length % size_of(f.dtype))
          probs.push_back(
              fmt::format("a fragment of '{}' ({}) has {} bytes", t.name, kind_name(k), f.length));
        if (f.elem_begin != covered)
          probs.push_back(fmt::format(
              "tensor '{}' ({}): elements [{}, {}) {}", t.name, kind_name(k),
              std::min<uint64_t>(covered, f.elem_begin), std::max<uint64_t>(covered, f.elem_begin),
              f.elem_begin > covered ? "are in no fragment" : "are in two fragments"));
        covered = std::max<uint64_t>(covered, f.elem_begin + f.length / size_of(f.dtype));
        auto it = files.find(f.file);
        if (it == files.end())
          probs.push_back(fmt::format(
              "a fragment of '{}' names {}, which the manifest does not list", t.name, f.file));
        else if (past_end(f, it->second.first))
          probs.push_back(
              fmt::format("a fragment of '{}' ({} bytes at byte {}) runs past the end of {} ({} "
                          "bytes)",
                          t.name, f.length, f.offset, f.file, it->second.first));
        else if (it->second.second)
          by_file[f.file].push_back(&f);
      }
      if (covered != part.elems)
        probs.push_back(fmt::format("tensor '{}' ({}): fragments cover {} of {} elements", t.name,
                                    kind_name(k), covered, part.elems));
    }
  }
  std::vector<std::byte> buf;
  for (auto& [name, frags] : by_file) {
    const fs::path p = m.dir / name;
    fd_guard fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd.fd < 0) {
      probs.push_back(fmt::format("cannot open {}: {}", p.string(), std::strerror(errno)));
      continue;
    }
    try {
      require_regular(fd.fd, p);
    } catch (const error& e) {
      probs.push_back(e.what());
      continue;
    }
    std::sort(frags.begin(), frags.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (auto* f : frags) {
      try {
        const uint32_t crc = crc_of_range(fd.fd, f->offset, f->length, buf, p);
        r.bytes += f->length;
        if (crc != f->crc32)
          probs.push_back(fmt::format(
              "checkpoint file {} is corrupt: tensor '{}' ({}, {} bytes at offset {}) has "
              "CRC-32 {:08x}, the manifest says {:08x}",
              p.string(), f->tensor, kind_name(f->kind), f->length, f->offset, crc, f->crc32));
      } catch (const zf::error& e) {
        probs.push_back(e.what());
      }
    }
  }
  r.ok = probs.empty();
  return r;
}

}  // namespace zf::storage
