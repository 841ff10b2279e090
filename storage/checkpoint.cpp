// Reading checkpoints: resolving folders, the manifest, fragments (any slice, CRC-checked), and
// verification. Writing and the commit point are checkpoint_write.cpp.
#include "storage/checkpoint.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <kj/exception.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string_view>

#include "manifest.capnp.h"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "storage/checkpoint_format.hpp"
#include "storage/fs_util.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
using namespace detail;
namespace detail {

// Bytes read (fewer than n only at end of file).
std::size_t pread_all(int fd, void* dst, std::size_t n, uint64_t off, const fs::path& p) {
  auto* d = static_cast<std::byte*>(dst);
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, d + done, std::min(n - done, k_io), static_cast<off_t>(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("read {} failed at byte {}: {}", p.string(), off + done, std::strerror(errno));
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return done;
}

// Whether [offset, offset + length) reaches past `size` bytes. Not offset + length > size: both
// come from the manifest, and a sum that wraps past 2^64 would pass as a small end (a fragment of
// 2^64 - 8 bytes at byte 16 "ended" at byte 8 and was then staged in a buffer of that length).
bool past_end(const fragment& f, uint64_t size) {
  return f.length > size || f.offset > size - f.length;
}

}  // namespace detail

namespace {

std::size_t numel_of(const std::vector<int64_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= d < 0 ? 0 : static_cast<std::size_t>(d);
  return n;
}

[[noreturn]] void format1(const fs::path& dir) {
  fail(
      "{} is a format-1 checkpoint (manifest.json + safetensors files); this build reads "
      "checkpoint format {} only",
      dir.string(), k_checkpoint_version);
}

// At most 64 bytes of s, printable ASCII as is, anything else as \xNN (for messages).
std::string shown(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < 64; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += c >= 0x20 && c < 0x7f ? std::string(1, char(c)) : fmt::format("\\x{:02x}", c);
  }
  return s.size() > 64 ? out + "..." : out;
}

fs::path from_latest(const fs::path& latest) {
  std::string name = read_text_file(latest);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  if (!is_step_dir_name(name))
    fail("{} should name a step folder (step-NNNNNN) but holds '{}' ({} bytes)", latest.string(),
         shown(name), name.size());
  fs::path d = latest.parent_path() / name;
  if (!fs::exists(manifest_path(d))) {
    if (fs::exists(d / "manifest.json")) format1(d);
    fail("{} names {}, which has no manifest", latest.string(), d.string());
  }
  return d;
}

// ---- reading fragments ----------------------------------------------------------------------

struct need {  // one fragment to read, and where the wanted part of it goes
  const fragment* f;
  uint64_t skip;   // fragment elements before the first wanted one
  uint64_t count;  // elements wanted
  float* dst;      // destination of the first wanted element
};

// The fragments of the given kinds that [begin, end) of layout needs; outs[kind] may be null.
std::vector<need> plan(const checkpoint_manifest& m, const param_layout& L, std::size_t begin,
                       std::size_t end, float* const outs[3]) {
  if (m.quantized())
    fail(
        "checkpoint {} is quantized ({}, {}): it serves, generates and scores (--checkpoint), but "
        "training and float loads need the float checkpoint it was quantized from",
        m.dir.string(), m.quant_scheme, m.quant_method);
  std::vector<need> needs;
  const std::string mp = manifest_path(m.dir).string();
  for (auto& p : L.params) {
    if (p.numel == 0 || p.offset >= end || p.offset + p.numel <= begin) continue;
    const tensor_entry* t = m.find(p.name);
    if (!t)
      fail("checkpoint {} has no tensor '{}' (the model expects F32[{}])", m.dir.string(), p.name,
           shape_str(p.shape));
    if (t->dtype != "F32" && t->shape == p.shape)
      fail(
          "checkpoint {}: tensor '{}' is {}[{}], the model's layout is F32; this build reads F32 "
          "checkpoints only ({} is not supported yet)",
          m.dir.string(), p.name, t->dtype, shape_str(t->shape), t->dtype);
    if (t->dtype != "F32" || t->shape != p.shape)
      fail("checkpoint {}: tensor '{}' is {}[{}], the model expects F32[{}]", m.dir.string(),
           p.name, t->dtype, shape_str(t->shape), shape_str(p.shape));
    const uint64_t lo = std::max(begin, p.offset) - p.offset;
    const uint64_t hi = std::min(end, p.offset + p.numel) - p.offset;
    for (int k = 0; k < 3; ++k) {
      if (!outs[k]) continue;
      uint64_t covered = lo;
      bool any = false;
      for (auto& f : t->fragments) {  // sorted by kind, then elem_begin
        if (f.kind != k) continue;
        any = true;
        const std::size_t es = size_of(f.dtype);
        if (f.length % es)
          fail("corrupt checkpoint manifest {}: a fragment of '{}' has {} bytes", mp, p.name,
               f.length);
        const uint64_t fb = f.elem_begin, fe = fb + f.length / es;
        if (fe <= covered || fb >= hi) continue;
        if (fb > covered) break;    // a gap
        if (f.dtype != dtype::f32)  // refused by name, never reinterpreted as fp32
          fail(
              "checkpoint {}: tensor '{}' ({}) is stored as {} in {}, the model's layout is f32; "
              "this build reads f32 checkpoints only ({} is not supported yet)",
              m.dir.string(), p.name, kind_name(k), dtype_name(f.dtype), f.file,
              dtype_name(f.dtype));
        const uint64_t a = covered, b = std::min(fe, hi);
        needs.push_back({&f, a - fb, b - a, outs[k] + (p.offset + a - begin)});
        covered = b;
      }
      if (covered < hi) {
        if (!any)
          fail("checkpoint {} holds no {} for tensor '{}' (saved without optimizer state?)",
               m.dir.string(), kind_name(k), p.name);
        fail("corrupt checkpoint manifest {}: elements [{}, {}) of '{}' ({}) are in no fragment",
             mp, covered, hi, p.name, kind_name(k));
      }
    }
  }
  return needs;
}

// Opens the data file holding f into fd after checking that the manifest lists it and that it
// has exactly the listed size; returns that size.
uint64_t open_listed(const checkpoint_manifest& m, const std::map<std::string, uint64_t>& listed,
                     const fragment& f, fd_guard& fd) {
  const fs::path p = m.dir / f.file;
  auto it = listed.find(f.file);
  if (it == listed.end())
    fail("corrupt checkpoint manifest {}: tensor '{}' names file {}, which it does not list",
         manifest_path(m.dir).string(), f.tensor, f.file);
  fd.reset(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.fd < 0) {
    if (errno == ENOENT)
      fail("checkpoint file {} is missing (it holds tensor '{}')", p.string(), f.tensor);
    fail("cannot open checkpoint file {} (tensor '{}'): {}", p.string(), f.tensor,
         std::strerror(errno));
  }
  require_regular(fd.fd, p);
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail("cannot stat {}: {}", p.string(), std::strerror(errno));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < it->second)
    fail("checkpoint file {} is truncated: {} bytes, the manifest says {} (tensor '{}')",
         p.string(), size, it->second, f.tensor);
  if (size > it->second)
    fail("checkpoint file {} is corrupt: {} bytes, the manifest says {} (tensor '{}')", p.string(),
         size, it->second, f.tensor);
  return size;
}

void check_inside(const checkpoint_manifest& m, const fragment& f, uint64_t size) {
  if (past_end(f, size))
    fail(
        "corrupt checkpoint manifest {}: a fragment of '{}' ({} bytes at byte {}) runs past the "
        "end of {} ({} bytes)",
        manifest_path(m.dir).string(), f.tensor, f.length, f.offset, (m.dir / f.file).string(),
        size);
}

void check_crc(const fragment& f, const void* data, const fs::path& p) {
  const uint32_t crc = crc32_of(data, f.length);
  if (crc != f.crc32)
    fail(
        "checkpoint file {} is corrupt: tensor '{}' ({}, {} bytes at offset {}) has CRC-32 "
        "{:08x}, the manifest says {:08x}",
        p.string(), f.tensor, kind_name(f.kind), f.length, f.offset, crc, f.crc32);
}

// Reads and CRC-checks every needed fragment, then copies the wanted elements out. With
// stage == false a fragment that is wanted whole is read straight into its destination and a
// partial one is staged alone and copied out as soon as it verified (for callers that own the
// outputs and drop them on failure); otherwise everything is staged and nothing reaches the
// outputs unless every fragment verified.
void read_fragments(const checkpoint_manifest& m, std::vector<need> needs, bool stage,
                    load_stats* stats = nullptr) {
  std::map<std::string, uint64_t> listed(m.files.begin(), m.files.end());
  std::sort(needs.begin(), needs.end(), [](const need& a, const need& b) {
    return a.f->file != b.f->file ? a.f->file < b.f->file : a.f->offset < b.f->offset;
  });
  std::vector<std::vector<float>> staged(stage ? needs.size() : 1);
  uint64_t held = 0;  // staging bytes alive now
  std::string cur;
  fd_guard fd;
  uint64_t size = 0;
  for (std::size_t i = 0; i < needs.size(); ++i) {
    const need& n = needs[i];
    const fragment& f = *n.f;
    const fs::path p = m.dir / f.file;
    if (f.file != cur) {
      cur.clear();
      size = open_listed(m, listed, f, fd);
      cur = f.file;
    }
    check_inside(m, f, size);
    const bool whole = !stage && n.skip == 0 && n.count * sizeof(float) == f.length;
    float* target = n.dst;
    auto& buf = staged[stage ? i : 0];
    if (!whole) {
      buf.resize(f.length / sizeof(float));  // not staging: one buffer, reused
      target = buf.data();
      held = stage ? held + f.length : std::max<uint64_t>(held, f.length);
    }
    if (stats) {
      stats->bytes_read += f.length;
      stats->bytes_staged += whole ? 0 : f.length;
      stats->peak_staged = std::max(stats->peak_staged, held);
    }
    if (pread_all(fd.fd, target, f.length, f.offset, p) != f.length)
      fail("checkpoint file {} is truncated inside tensor '{}'", p.string(), f.tensor);
    check_crc(f, target, p);
    if (!stage && !whole) std::memcpy(n.dst, buf.data() + n.skip, n.count * sizeof(float));
  }
  if (stage)
    for (std::size_t i = 0; i < needs.size(); ++i)
      if (!staged[i].empty())
        std::memcpy(needs[i].dst, staged[i].data() + needs[i].skip, needs[i].count * sizeof(float));
}

// ---- manifest encoding ----------------------------------------------------------------------

dtype from_capnp(::Manifest::Dtype t, const fs::path& manifest) {
  switch (t) {
    case ::Manifest::Dtype::F32:
      return dtype::f32;
    case ::Manifest::Dtype::BF16:
      return dtype::bf16;
    case ::Manifest::Dtype::F16:
      return dtype::f16;
    case ::Manifest::Dtype::U8:
      return dtype::u8;
  }
  fail("corrupt checkpoint manifest {}: fragment dtype {} is unknown", manifest.string(),
       static_cast<int>(t));
}

}  // namespace

const char* kind_name(int kind) {
  switch (kind) {
    case kind_param:
      return "param";
    case kind_exp_avg:
      return "exp_avg";
    case kind_exp_avg_sq:
      return "exp_avg_sq";
    case kind_qdata:
      return "qdata";
    case kind_qscales:
      return "qscales";
    case kind_qzeros:
      return "qzeros";
    case kind_lorc_a:
      return "lorc_a";
    case kind_lorc_b:
      return "lorc_b";
  }
  return "unknown";
}

std::size_t tensor_entry::numel() const {
  return numel_of(shape);
}

const tensor_entry* checkpoint_manifest::find(const std::string& name) const {
  for (auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

bool checkpoint_manifest::has_kind(int kind) const {
  for (auto& t : tensors)
    for (auto& f : t.fragments)
      if (f.kind == kind) return true;
  return false;
}

// ---- reading --------------------------------------------------------------------------------

namespace {

long long step_number(const fs::path& step_dir) {
  const std::string n = step_dir.filename().string();
  return is_step_dir_name(n) ? std::stoll(n.substr(5)) : -1;
}

// The newest step folder of root whose manifest reads (it is written and fsynced before the
// folder is renamed into place, so such a folder is complete); empty if none.
fs::path newest_complete(const fs::path& root) {
  const auto dirs = step_dirs(root);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    try {
      read_checkpoint_manifest(*it);
      return *it;
    } catch (const error&) {
      // an unreadable folder is not a checkpoint; an older one may be
    }
  }
  return {};
}

// root's checkpoint (see resolve_checkpoint); empty if it holds none.
fs::path resolve_root(const fs::path& root) {
  const fs::path newest = newest_complete(root);
  if (!fs::exists(root / "latest")) return newest;
  const fs::path named = from_latest(root / "latest");
  return !newest.empty() && step_number(newest) > step_number(named) ? newest : named;
}

}  // namespace

bool has_checkpoint(const fs::path& root) {
  return fs::exists(root / "latest") || !newest_complete(root).empty();
}

fs::path resolve_checkpoint(const fs::path& dir) {
  if (fs::exists(manifest_path(dir))) return dir;
  if (fs::exists(dir / "manifest.json")) format1(dir);
  if (dir.filename() == "latest" && fs::is_regular_file(dir))
    return resolve_root(dir.parent_path());
  for (const fs::path& root : {dir, dir / "checkpoints"})
    if (fs::path p = resolve_root(root); !p.empty()) return p;
  fail("no checkpoint at {} (expected a step folder with a manifest, or a 'latest' file)",
       dir.string());
}

checkpoint_manifest read_checkpoint_manifest(const fs::path& dir_in) {
  checkpoint_manifest out;
  out.dir = resolve_checkpoint(dir_in);
  const fs::path mp = manifest_path(out.dir);
  const std::string text = read_text_file(mp);
  auto corrupt = [&](const std::string& why) {
    fail("corrupt checkpoint manifest {}: {}", mp.string(), why);
  };
  if (text.empty() || text.size() % sizeof(capnp::word))
    corrupt(fmt::format("{} bytes is not a whole Cap'n Proto message", text.size()));
  auto words = kj::heapArray<capnp::word>(text.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), text.data(), text.size());
  try {
    capnp::ReaderOptions opts;
    // Reading a manifest visits each of its words about once, so a few times its size is room
    // enough. No floor: a list of zero-size structs costs no bytes but one word of this budget
    // per element, so a fixed 8 Mi words let a few hundred bytes claim millions of fragments
    // (gigabytes of fragment records and minutes of sorting; found by fuzz/fuzz_checkpoint).
    opts.traversalLimitInWords = words.size() * 4;
    capnp::FlatArrayMessageReader outer(words, opts);
    if (outer.getEnd() != words.end()) corrupt("bytes after the end of the message");
    auto r = outer.getRoot<::ManifestFile>();
    if (std::string_view(r.getMagic().cStr()) != k_magic)
      fail("{} is not a zeroflow checkpoint manifest", mp.string());
    out.version = static_cast<int>(r.getVersion());
    if (out.version != k_checkpoint_version)
      fail("{}: checkpoint format version {} is not supported (this build reads version {})",
           mp.string(), out.version, k_checkpoint_version);
    auto body = r.getBody();
    const uint32_t crc = crc32_of(body.begin(), body.size());
    if (crc != r.getCrc32())
      corrupt(fmt::format("CRC-32 {:08x}, the manifest says {:08x}", crc, r.getCrc32()));
    if (body.size() % sizeof(capnp::word) ||
        reinterpret_cast<uintptr_t>(body.begin()) % alignof(capnp::word))
      corrupt("the body is not word-aligned");
    kj::ArrayPtr<const capnp::word> bw(reinterpret_cast<const capnp::word*>(body.begin()),
                                       body.size() / sizeof(capnp::word));
    capnp::FlatArrayMessageReader inner(bw, opts);
    auto m = inner.getRoot<::Manifest>();
    if (m.getStep() < 0 || m.getStep() > INT32_MAX) corrupt(fmt::format("step {}", m.getStep()));
    out.step = static_cast<int>(m.getStep());
    out.world = m.getWorld();
    out.zero_stage = m.getZeroStage();
    out.config_toml = m.getConfigToml().cStr();
    out.quant_scheme = m.getQuantScheme().cStr();
    out.quant_method = m.getQuantMethod().cStr();
    try {
      out.state = nlohmann::json::parse(std::string(m.getStateJson().cStr()));
    } catch (const nlohmann::json::exception& e) {
      corrupt(fmt::format("trainer state: {}", e.what()));
    }
    for (auto f : m.getFiles()) {
      // Data files live in the step folder: a name that leaves it ("../x", "/etc/x") would make
      // load and verify read any file the process can.
      const std::string name = f.getName().cStr();
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        corrupt(fmt::format(
            "data file name {} is not a plain file name in the step folder",
            nlohmann::json(name).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
      out.files.emplace_back(name, f.getBytes());
    }
    for (auto t : m.getTensors()) {
      tensor_entry e;
      e.name = t.getName().cStr();
      e.dtype = t.getDtype().cStr();
      for (auto d : t.getShape()) e.shape.push_back(d);
      if (t.hasQuant()) {
        auto q = t.getQuant();
        e.quant = {q.getFormat().cStr(), q.getK(),    q.getN(),      q.getGroup(),
                   q.getRank(),          q.getAsym(), q.getActInt8()};
      }
      for (auto f : t.getFragments()) {
        const int kind = static_cast<int>(f.getKind());
        if (kind < 0 || kind >= k_kinds)
          corrupt(fmt::format("tensor '{}' has a fragment of unknown kind {}", e.name, kind));
        e.fragments.push_back({e.name, kind, f.getFile().cStr(), f.getOffset(), f.getLength(),
                               f.getElemBegin(), f.getCrc32(), from_capnp(f.getDtype(), mp)});
      }
      std::sort(e.fragments.begin(), e.fragments.end(), [](auto& a, auto& b) {
        return a.kind != b.kind ? a.kind < b.kind : a.elem_begin < b.elem_begin;
      });
      out.tensors.push_back(std::move(e));
    }
  } catch (const kj::Exception& e) {
    corrupt(e.getDescription().cStr());
  }
  return out;
}

void read_fragment_bytes(const checkpoint_manifest& m, const fragment& f, void* dst) {
  std::map<std::string, uint64_t> listed(m.files.begin(), m.files.end());
  fd_guard fd;
  check_inside(m, f, open_listed(m, listed, f, fd));
  const fs::path p = m.dir / f.file;
  if (pread_all(fd.fd, dst, f.length, f.offset, p) != f.length)
    fail("checkpoint file {} is truncated inside tensor '{}'", p.string(), f.tensor);
  check_crc(f, dst, p);
}

loaded_checkpoint read_manifest(const fs::path& dir) {
  auto m = read_checkpoint_manifest(dir);
  loaded_checkpoint out;
  out.dir = m.dir;
  out.step = m.step;
  out.config_toml = std::move(m.config_toml);
  out.state = std::move(m.state);
  return out;
}

loaded_checkpoint load_checkpoint(const fs::path& dir, const param_layout& layout) {
  auto m = read_checkpoint_manifest(dir);
  loaded_checkpoint out;
  out.dir = m.dir;
  out.step = m.step;
  out.config_toml = m.config_toml;
  out.state = m.state;
  out.params.assign(layout.total, 0.0f);
  if (m.has_kind(kind_exp_avg) && m.has_kind(kind_exp_avg_sq)) {
    out.exp_avg.assign(layout.total, 0.0f);
    out.exp_avg_sq.assign(layout.total, 0.0f);
  }
  float* outs[3] = {out.params.data(), out.exp_avg.empty() ? nullptr : out.exp_avg.data(),
                    out.exp_avg_sq.empty() ? nullptr : out.exp_avg_sq.data()};
  read_fragments(m, plan(m, layout, 0, layout.total, outs), false);  // the outputs are ours
  return out;
}

void load_range(const fs::path& dir, const param_layout& layout, std::size_t begin, std::size_t end,
                float* params, float* exp_avg, float* exp_avg_sq) {
  check_range(layout, begin, end, "load_range");
  auto m = read_checkpoint_manifest(dir);
  float* outs[3] = {params, exp_avg, exp_avg_sq};
  read_fragments(m, plan(m, layout, begin, end, outs), true);
}

void load_range(const checkpoint_manifest& m, const param_layout& layout, std::size_t begin,
                std::size_t end, float* params, float* exp_avg, float* exp_avg_sq,
                const range_options& o) {
  check_range(layout, begin, end, "load_range");
  float* outs[3] = {params, exp_avg, exp_avg_sq};
  read_fragments(m, plan(m, layout, begin, end, outs), o.all_or_nothing, o.stats);
}

}  // namespace zf::storage
